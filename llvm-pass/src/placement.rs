//! Where a function's counts are kept: the decision, over the control-flow graph alone.
//!
//! Blocks are indices and block 0 is the entry. A block's counts reach the function's four
//! accumulators in one of three ways ([`Counting`]); inside a loop without calls the two
//! cheaper ones defer the work to the loop's exits, where each exit block multiplies what the
//! loop's blocks ran by their counts and adds it to the accumulators. The choice changes what a
//! block costs, never what is counted: a block the loop analysis misses (one in an irreducible
//! cycle, say) is simply counted the plain way.

/// What the placement needs to know of one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// Where the block branches.
    pub successors: Vec<usize>,
    /// Whether it flushes the accumulators (it calls, returns or resumes unwinding), which makes
    /// a loop through it an ordinary one.
    pub flushes: bool,
    /// How many classes of operation it counts; 0 if nothing can be inserted into it (a
    /// `catchswitch` block), so that it can neither count, nor take a loop's exit, nor enter one.
    pub classes: usize,
    /// Whether it steps an induction variable of the header of its innermost loop: the loop's
    /// own arithmetic then says how often it ran.
    pub steps: bool,
}

/// How a block's counts reach the accumulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// An add per class of operation, each time it runs.
    Direct,
    /// One add to its own execution count each time it runs: a block of an innermost loop
    /// without calls. Loop strength reduction often merges it into the loop's induction variable.
    Executions,
    /// Nothing while the loop runs: the block steps an induction variable by a constant, so its
    /// execution count is how far the variable moved, divided by the step. The blocks entering
    /// the loop record where the variable starts.
    Steps,
}

/// How one function's counts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Per block: how its counts reach the accumulators.
    pub counting: Vec<Counting>,
    /// Per block: the blocks whose counts it folds into the accumulators, because it is an exit
    /// of their loop (they count [`Counting::Executions`] or [`Counting::Steps`]).
    pub folds: Vec<Vec<usize>>,
    /// Per block: the [`Counting::Steps`] blocks whose induction variable's start it records,
    /// because it branches into their loop from outside.
    pub entries: Vec<Vec<usize>>,
}

/// Decides a function's placement. Execution counts go to innermost loops only, so that each
/// holds a register in one loop; a block of one class of operation is cheapest counted directly.
/// `loops` are the loops of `blocks` (from [`Loops::find`], which the caller needed already to
/// tell which blocks step an induction variable).
pub fn place(blocks: &[Block], loops: &Loops) -> Placement {
    let successors: Vec<Vec<usize>> = blocks.iter().map(|b| b.successors.clone()).collect();
    let predecessors = predecessors(&successors);
    let mut counting = vec![Counting::Direct; blocks.len()];
    let mut folds = vec![Vec::new(); blocks.len()];
    let mut entries = vec![Vec::new(); blocks.len()];
    for (i, l) in loops.loops.iter().enumerate() {
        let mut in_loop = vec![false; blocks.len()];
        for &b in &l.body {
            in_loop[b] = true;
        }
        let innermost = l.body.iter().all(|&b| loops.innermost[b] == Some(i));
        let calls = l.body.iter().any(|&b| blocks[b].flushes);
        let mut exits: Vec<usize> = l.body.iter().flat_map(|&b| blocks[b].successors.iter().copied()).filter(|&s| !in_loop[s]).collect();
        exits.sort_unstable();
        exits.dedup();
        let outside: Vec<usize> = predecessors[l.header].iter().copied().filter(|&p| !in_loop[p]).collect();
        if calls || exits.iter().any(|&e| blocks[e].classes == 0) {
            continue;
        }
        let enterable = outside.iter().all(|&p| blocks[p].classes > 0);
        for &b in l.body.iter().filter(|&&b| loops.innermost[b] == Some(i)) {
            counting[b] = if blocks[b].steps && enterable {
                for &p in &outside {
                    entries[p].push(b);
                }
                Counting::Steps
            } else if innermost && blocks[b].classes > 1 {
                Counting::Executions
            } else {
                continue;
            };
            for &e in &exits {
                folds[e].push(b);
            }
        }
    }
    for list in folds.iter_mut().chain(entries.iter_mut()) {
        list.sort_unstable();
        list.dedup();
    }
    Placement { counting, folds, entries }
}

fn predecessors(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut predecessors = vec![Vec::new(); successors.len()];
    for (b, succs) in successors.iter().enumerate() {
        for &s in succs {
            predecessors[s].push(b);
        }
    }
    predecessors
}

/// A natural loop: a header that dominates every block of the body, entered only through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// The block every iteration starts at.
    pub header: usize,
    /// Every block of the loop, the header and nested loops included, in increasing order.
    pub body: Vec<usize>,
}

/// The natural loops of the graph and the innermost one of each block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loops {
    /// One loop per header (back edges to the same header make one loop).
    pub loops: Vec<Loop>,
    /// For each block, the index in `loops` of the smallest loop that contains it.
    pub innermost: Vec<Option<usize>>,
}

impl Loops {
    /// Finds the natural loops of the graph whose block `b` branches to `successors[b]`.
    /// Blocks the entry cannot reach are in no loop.
    pub fn find(successors: &[Vec<usize>]) -> Loops {
        let n = successors.len();
        let predecessors = predecessors(successors);
        let idom = dominators(successors, &predecessors);
        let dominates = |a: usize, mut b: usize| loop {
            if a == b {
                return true;
            }
            match idom[b] {
                Some(up) if up != b => b = up,
                _ => return false,
            }
        };
        let mut loops: Vec<Loop> = Vec::new();
        for header in 0..n {
            if idom[header].is_none() {
                continue;
            }
            let latches: Vec<usize> = predecessors[header].iter().copied().filter(|&p| idom[p].is_some() && dominates(header, p)).collect();
            if latches.is_empty() {
                continue;
            }
            // The body: the header and everything that reaches a latch without passing the header.
            let mut in_body = vec![false; n];
            in_body[header] = true;
            let mut work = latches;
            while let Some(b) = work.pop() {
                if !in_body[b] {
                    in_body[b] = true;
                    work.extend(predecessors[b].iter().copied().filter(|&p| idom[p].is_some()));
                }
            }
            loops.push(Loop { header, body: (0..n).filter(|&b| in_body[b]).collect() });
        }
        let mut innermost: Vec<Option<usize>> = vec![None; n];
        for (i, l) in loops.iter().enumerate() {
            for &b in &l.body {
                if innermost[b].is_none_or(|j| loops[j].body.len() > l.body.len()) {
                    innermost[b] = Some(i);
                }
            }
        }
        Loops { loops, innermost }
    }
}

/// Immediate dominators (Cooper, Harvey and Kennedy, "A Simple, Fast Dominance Algorithm"): the
/// entry is its own, an unreachable block has none.
fn dominators(successors: &[Vec<usize>], predecessors: &[Vec<usize>]) -> Vec<Option<usize>> {
    let n = successors.len();
    if n == 0 {
        return Vec::new();
    }
    let order = reverse_postorder(successors);
    let mut rank = vec![usize::MAX; n];
    for (i, &b) in order.iter().enumerate() {
        rank[b] = i;
    }
    let mut idom: Vec<Option<usize>> = vec![None; n];
    idom[0] = Some(0);
    let intersect = |idom: &[Option<usize>], mut a: usize, mut b: usize| {
        while a != b {
            while rank[a] > rank[b] {
                a = idom[a].expect("processed");
            }
            while rank[b] > rank[a] {
                b = idom[b].expect("processed");
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &b in order.iter().skip(1) {
            let mut new = None;
            for &p in &predecessors[b] {
                if idom[p].is_some() {
                    new = Some(match new {
                        None => p,
                        Some(d) => intersect(&idom, p, d),
                    });
                }
            }
            if new.is_some() && idom[b] != new {
                idom[b] = new;
                changed = true;
            }
        }
    }
    idom
}

/// The blocks reachable from the entry, each before its successors except along back edges.
fn reverse_postorder(successors: &[Vec<usize>]) -> Vec<usize> {
    let n = successors.len();
    let mut seen = vec![false; n];
    let mut post = Vec::with_capacity(n);
    // An explicit stack: functions with many thousands of blocks would overflow recursion.
    let mut stack = vec![(0usize, 0usize)];
    seen[0] = true;
    while let Some(&mut (b, ref mut next)) = stack.last_mut() {
        if let Some(&s) = successors[b].get(*next) {
            *next += 1;
            if !seen[s] {
                seen[s] = true;
                stack.push((s, 0));
            }
        } else {
            post.push(b);
            stack.pop();
        }
    }
    post.reverse();
    post
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loops(edges: &[&[usize]]) -> Loops {
        Loops::find(&edges.iter().map(|e| e.to_vec()).collect::<Vec<_>>())
    }

    use Counting::*;

    /// A graph of `edges`; `calls` flush, `steps` step an induction variable, every block
    /// counts `classes[b]` classes.
    fn place_in(edges: &[&[usize]], calls: &[usize], steps: &[usize], classes: &[usize]) -> Placement {
        let blocks: Vec<Block> = (0..edges.len())
            .map(|b| Block { successors: edges[b].to_vec(), flushes: calls.contains(&b), classes: classes[b], steps: steps.contains(&b) })
            .collect();
        place(&blocks, &Loops::find(&edges.iter().map(|e| e.to_vec()).collect::<Vec<_>>()))
    }

    #[test]
    fn a_call_free_loop_counts_executions_and_its_exits_fold_them() {
        // 0 -> 1 -> 2 -> 1 | 3 (exit), 1 -> 4 (early exit)
        let p = place_in(&[&[1], &[2, 4], &[1, 3], &[], &[]], &[3, 4], &[], &[2, 3, 2, 2, 2]);
        assert_eq!(p.counting, [Direct, Executions, Executions, Direct, Direct]);
        assert_eq!(p.folds, [vec![], vec![], vec![], vec![1, 2], vec![1, 2]]);
        assert!(p.entries.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_block_stepping_an_induction_variable_is_counted_by_it_and_its_entries_record_the_start() {
        // 0 -> 1 (self loop, steps) -> 2; 3 also enters the loop: 0 -> 3 -> 1
        let p = place_in(&[&[1, 3], &[1, 2], &[], &[1]], &[2], &[1], &[2, 1, 2, 2]);
        assert_eq!(p.counting, [Direct, Steps, Direct, Direct]);
        assert_eq!(p.folds[2], [1]);
        assert_eq!(p.entries, [vec![1], vec![], vec![], vec![1]]);
    }

    #[test]
    fn outer_loops_count_steps_but_not_executions() {
        // 0 -> 1 (outer header, steps) -> 2 (inner self loop) -> 3 (outer latch) -> 1 | 4
        let p = place_in(&[&[1], &[2], &[2, 3], &[1, 4], &[]], &[4], &[1], &[2; 5]);
        assert_eq!(p.counting, [Direct, Steps, Executions, Direct, Direct]);
        assert_eq!(p.folds[3], [2]);
        assert_eq!(p.folds[4], [1]);
        assert_eq!(p.entries[0], [1]);
    }

    #[test]
    fn loops_that_call_add_their_counts_and_so_does_a_block_of_one_class() {
        // 0 -> 1 -> 2 (calls) -> 1 | 3
        let p = place_in(&[&[1], &[2], &[1, 3], &[]], &[2, 3], &[1], &[2, 2, 2, 2]);
        assert_eq!(p.counting, [Direct; 4]);
        // 0 -> 1 (self loop, one class)
        let p = place_in(&[&[1], &[1, 2], &[]], &[2], &[], &[2, 1, 1]);
        assert_eq!(p.counting, [Direct; 3]);
    }

    #[test]
    fn a_loop_whose_exit_cannot_hold_code_adds_its_counts() {
        // 0 -> 1 (self loop) -> 2 (a catchswitch)
        let p = place_in(&[&[1], &[1, 2], &[]], &[], &[1], &[2, 2, 0]);
        assert_eq!(p.counting, [Direct; 3]);
    }

    #[test]
    fn a_straight_line_has_no_loops() {
        let l = loops(&[&[1], &[2], &[]]);
        assert!(l.loops.is_empty());
        assert_eq!(l.innermost, [None, None, None]);
    }

    #[test]
    fn a_self_loop_is_a_loop_of_one_block() {
        // 0 -> 1 -> 1 | 2
        let l = loops(&[&[1], &[1, 2], &[]]);
        assert_eq!(l.loops, [Loop { header: 1, body: vec![1] }]);
        assert_eq!(l.innermost, [None, Some(0), None]);
    }

    #[test]
    fn nested_loops_give_each_block_its_innermost() {
        // 0 -> 1 (outer header) -> 2 (inner, self loop) -> 3 (outer latch) -> 1 | 4
        let l = loops(&[&[1], &[2], &[2, 3], &[1, 4], &[]]);
        let outer = l.loops.iter().position(|x| x.header == 1).unwrap();
        let inner = l.loops.iter().position(|x| x.header == 2).unwrap();
        assert_eq!(l.loops[outer].body, [1, 2, 3]);
        assert_eq!(l.loops[inner].body, [2]);
        assert_eq!(l.innermost, [None, Some(outer), Some(inner), Some(outer), None]);
    }

    #[test]
    fn early_exits_and_two_latches_make_one_loop() {
        // 0 -> 1 -> 2 | 5 (exit); 2 -> 3 | 4; 3 -> 1; 4 -> 1 | 5
        let l = loops(&[&[1], &[2, 5], &[3, 4], &[1], &[1, 5], &[]]);
        assert_eq!(l.loops, [Loop { header: 1, body: vec![1, 2, 3, 4] }]);
        assert_eq!(l.innermost[5], None);
    }

    #[test]
    fn an_irreducible_cycle_is_no_natural_loop_and_unreachable_blocks_are_in_none() {
        // 0 -> 1 | 2; 1 <-> 2 (two entries, neither dominates); 3 -> 3 unreachable
        let l = loops(&[&[1, 2], &[2], &[1], &[3]]);
        assert!(l.loops.is_empty());
        assert_eq!(l.innermost, [None, None, None, None]);
    }
}
