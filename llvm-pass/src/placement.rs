//! Where a function's counts are kept: the decision, over the control-flow graph alone.
//!
//! Blocks are indices and block 0 is the entry. A block's counts reach the function's four
//! accumulators in one of four ways ([`Counting`]); inside a loop without hot calls the cheaper
//! ones defer the work: the loop's exits (and the flushes inside it) add the run's execution
//! count to the counted block's total, and the next flush multiplies totals by the blocks'
//! counts. The choice changes what a block costs, never what is counted: a block the loop
//! analysis misses (one in an irreducible cycle, say) is simply counted the plain way.

/// What the placement needs to know of one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// Where the block branches.
    pub successors: Vec<usize>,
    /// Whether it flushes the accumulators (it calls, returns or resumes unwinding): the counts
    /// of a loop through it are folded there too, and it cannot count by [`Counting::Steps`]
    /// (the flush might come before its step).
    pub flushes: bool,
    /// Whether its flush is on a cold path (it calls a `cold` function, or ends in
    /// `unreachable`): a loop counts by executions or steps only if every flush inside it is.
    pub cold: bool,
    /// Its counts, per class (ALU, memory, floating point, total); `None` if nothing can be
    /// inserted into it (a `catchswitch` block), so that it can neither count, nor take a loop's
    /// exit, nor enter one.
    pub counts: Option<[u64; 4]>,
    /// Whether it steps an induction variable of the header of its innermost loop: the loop's
    /// own arithmetic then says how often it ran.
    pub steps: bool,
    /// Whether the loop compares that variable to decide whether to go on (to a bound, mostly):
    /// a counted loop. An outer loop that is not counted (a hash table's probe, say) often runs
    /// once, and its exits' folds would cost more than the adds they save.
    pub counted: bool,
}

/// How a block's counts reach the accumulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// An add per class of operation, each time it runs.
    Direct,
    /// One add to its own execution count each time it runs: a block of an innermost loop
    /// without calls. Loop strength reduction often merges it into the loop's induction variable.
    Executions,
    /// Nothing while the loop runs: the block runs once in every iteration of its loop, as the
    /// loop's [`Counting::Steps`] block does, and its counts join that block's. Where the loop
    /// leaves in the middle of an iteration, the exit's fold corrects for the blocks of the last
    /// iteration that ran, or did not, with a constant for the edge it left by.
    Follows,
    /// Nothing while the loop runs: the block steps an induction variable by a constant, so its
    /// execution count is how far the variable moved, divided by the step. The blocks entering
    /// the loop record where the variable starts, and each fold moves the start up to where the
    /// variable got.
    Steps,
}

/// Functions with more blocks than this have no loops looked for ([`Loops::find`] is quadratic
/// in a loop's size at worst), so they are counted the plain way.
const MAX_BLOCKS: usize = 20_000;

/// One block's execution count joining its total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fold {
    /// The block whose execution count is folded.
    pub block: usize,
    /// Whether the fold is inside the block's loop (which goes on from there), not at an exit.
    pub within: bool,
    /// Per predecessor of the folding block, what to add besides, per class (wrapping: it may
    /// take away): the followers that ran in the last iteration although the counted block did
    /// not, or the other way round. Predecessors not listed add nothing; mostly none is listed.
    pub corrections: Vec<(usize, [u64; 4])>,
}

/// How one function's counts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Per block: how its counts reach the accumulators.
    pub counting: Vec<Counting>,
    /// Per block counting [`Counting::Direct`]: what it adds at its top (its own counts, and
    /// those of blocks that always follow it without a flush between; those add nothing).
    pub direct: Vec<[u64; 4]>,
    /// Per block counting [`Counting::Executions`] or [`Counting::Steps`]: what each of its
    /// executions adds, per class (its own counts and its followers').
    pub per_execution: Vec<[u64; 4]>,
    /// Per block: the blocks whose execution counts it adds to their totals, because it is an
    /// exit of their loop or flushes inside it. A block that flushes folds right before its
    /// flush, any other at its start.
    pub folds: Vec<Vec<Fold>>,
    /// Per flushing block: the blocks whose totals it multiplies out into the accumulators (and
    /// clears), right before it flushes them: those folded since the flush before. Totals
    /// cross outer loops as one add per inner loop run, where the accumulators would take four.
    pub settles: Vec<Vec<usize>>,
    /// Per flushing block: what the accumulators start from after its flush (wrapping): the
    /// corrections its folds inside loops added for the iteration under way, taken back.
    pub restarts: Vec<[u64; 4]>,
    /// Per block: the [`Counting::Steps`] blocks whose induction variable's start it records,
    /// because it branches into their loop from outside.
    pub entries: Vec<Vec<usize>>,
}

/// Decides a function's placement. `loops` are the loops of `blocks` (from [`Loops::find`],
/// which the caller needed already to tell which blocks step an induction variable). Execution
/// counts go to innermost loops only, so that each holds a register in one loop; a block of one
/// class of operation is cheapest counted directly.
pub fn place(blocks: &[Block], loops: &Loops) -> Placement {
    let successors: Vec<Vec<usize>> = blocks.iter().map(|b| b.successors.clone()).collect();
    let predecessors = predecessors(&successors);
    let counts = |b: usize| blocks[b].counts.unwrap_or_default();
    let classes = |b: usize| counts(b).iter().filter(|&&n| n > 0).count();
    let mut counting = vec![Counting::Direct; blocks.len()];
    let mut folds = vec![Vec::new(); blocks.len()];
    let mut per_executions = vec![[0u64; 4]; blocks.len()];
    let mut restarts = vec![[0u64; 4]; blocks.len()];
    let mut entries = vec![Vec::new(); blocks.len()];
    for (i, l) in loops.loops.iter().enumerate() {
        let mut in_loop = vec![false; blocks.len()];
        for &b in &l.body {
            in_loop[b] = true;
        }
        let own = |b: usize| loops.innermost[b] == Some(i);
        let innermost = l.body.iter().all(|&b| own(b));
        let mut exits: Vec<usize> = l.body.iter().flat_map(|&b| blocks[b].successors.iter().copied()).filter(|&s| !in_loop[s]).collect();
        exits.sort_unstable();
        exits.dedup();
        // A flush on every iteration would fold on every iteration: more work than adding.
        let hot_flush = l.body.iter().any(|&b| blocks[b].flushes && !blocks[b].cold);
        if hot_flush || exits.iter().any(|&e| blocks[e].counts.is_none()) {
            continue;
        }
        let outside: Vec<usize> = predecessors[l.header].iter().copied().filter(|&p| !in_loop[p]).collect();
        let enterable = outside.iter().all(|&p| blocks[p].counts.is_some());
        let flushing: Vec<usize> = l.body.iter().copied().filter(|&b| blocks[b].flushes).collect();
        let latches: Vec<usize> = predecessors[l.header].iter().copied().filter(|&p| in_loop[p]).collect();
        let exiting: Vec<usize> = l.body.iter().copied().filter(|&b| blocks[b].successors.iter().any(|&s| !in_loop[s])).collect();
        let every_iteration = |b: usize| latches.iter().all(|&x| loops.dominates(b, x));
        // Per block running every iteration: what it can reach before the iteration ends.
        let reach: Vec<Option<Vec<bool>>> =
            (0..blocks.len()).map(|b| (in_loop[b] && every_iteration(b)).then(|| reachable_within(&successors, &in_loop, l.header, b))).collect();
        // Whether `b` ran in the iteration that leaves from `x`: 1 if it must have, 0 if it
        // cannot have, `None` if that depends on the path taken.
        let ran = |b: usize, x: usize| -> Option<u64> {
            if loops.dominates(b, x) {
                Some(1)
            } else if reach[b].as_ref()?[x] {
                None
            } else {
                Some(0)
            }
        };
        let steps = |b: usize| own(b) && blocks[b].steps && (blocks[b].counted || innermost) && !blocks[b].flushes && enterable;
        // Where the loop's counts must be whole: where it leaves, and where it flushes inside.
        let sites: Vec<usize> = exiting.iter().chain(&flushing).copied().collect();
        // The block that runs once per iteration and counts by steps, which the others that do
        // so follow.
        let leader = l.body.iter().copied().filter(|&b| steps(b) && every_iteration(b)).find(|&b| sites.iter().all(|&x| ran(b, x).is_some()));
        let followers: Vec<usize> = match leader {
            Some(s) => l
                .body
                .iter()
                .copied()
                .filter(|&b| b != s && own(b) && classes(b) > 0 && every_iteration(b) && sites.iter().all(|&x| ran(b, x).is_some()))
                .collect(),
            None => Vec::new(),
        };
        for &b in l.body.iter().filter(|&&b| own(b)) {
            counting[b] = if followers.contains(&b) {
                Counting::Follows
            } else if steps(b) {
                for &p in &outside {
                    entries[p].push(b);
                }
                Counting::Steps
            } else if innermost && classes(b) > 1 {
                Counting::Executions
            } else {
                continue;
            };
            if counting[b] == Counting::Follows {
                continue;
            }
            let mut per_execution = counts(b);
            let mut corrections = Vec::new();
            if Some(b) == leader {
                for &f in &followers {
                    add(&mut per_execution, counts(f), 1);
                }
                // At x (leaving, or flushing inside): each follower ran ran(f, x) times in the
                // current iteration, the leader ran(b, x) times.
                for &x in &sites {
                    let mut correction = [0u64; 4];
                    for &f in &followers {
                        let (f_ran, b_ran) = (ran(f, x).expect("checked"), ran(b, x).expect("checked"));
                        add(&mut correction, counts(f), f_ran.wrapping_sub(b_ran));
                    }
                    if correction != [0; 4] {
                        corrections.push((x, correction));
                    }
                }
            }
            per_executions[b] = per_execution;
            for &e in &exits {
                let at_e: Vec<(usize, [u64; 4])> =
                    corrections.iter().filter(|(x, _)| exiting.contains(x) && blocks[*x].successors.contains(&e)).cloned().collect();
                folds[e].push(Fold { block: b, within: false, corrections: at_e });
            }
            // Flushing inside: the correction for the iteration so far is added before the flush
            // and taken back after it, since that iteration's blocks are counted again (as part
            // of the next step or exit) from there on.
            for &f in &flushing {
                let at_f: Vec<(usize, [u64; 4])> = corrections.iter().filter(|(x, _)| *x == f).cloned().collect();
                for (_, c) in &at_f {
                    add(&mut restarts[f], *c, 1u64.wrapping_neg());
                }
                folds[f].push(Fold { block: b, within: true, corrections: at_f });
            }
        }
    }
    for list in &mut folds {
        list.sort_unstable();
    }
    // Each fold adds to the block's total; the flushes that can come next multiply it out.
    let mut settles = vec![Vec::new(); blocks.len()];
    for (site, list) in folds.iter().enumerate().filter(|(_, list)| !list.is_empty()) {
        for f in next_flushes(blocks, site) {
            settles[f].extend(list.iter().map(|fold| fold.block));
        }
    }
    for list in &mut settles {
        list.sort_unstable();
        list.dedup();
    }
    for list in &mut entries {
        list.sort_unstable();
    }
    let direct = merge_direct(blocks, loops, &successors, &predecessors, &counting);
    Placement { counting, direct, per_execution: per_executions, folds, settles, entries, restarts }
}

/// What each block counting [`Counting::Direct`] adds at its top: its own counts and those of
/// the blocks that always run after it, once each time it runs, with no flush in between
/// (`b` whose immediate dominator `a` it post-dominates, in the same loop, no flush in `a` or
/// between them, and no way back around the loop from `a` to `b`). Adding them early changes
/// nothing a flush can see.
fn merge_direct(blocks: &[Block], loops: &Loops, successors: &[Vec<usize>], predecessors: &[Vec<usize>], counting: &[Counting]) -> Vec<[u64; 4]> {
    let ipdom = post_dominators(successors, predecessors);
    let direct = |b: usize| counting[b] == Counting::Direct && blocks[b].counts.is_some();
    let mut into: Vec<Option<usize>> = vec![None; blocks.len()];
    // Which search last saw each block (one array for all of them).
    let mut seen_by: Vec<usize> = vec![0; blocks.len()];
    for b in 1..blocks.len() {
        let Some(a) = loops.idom[b].filter(|&a| a != b) else { continue };
        if !direct(a) || !direct(b) || blocks[a].flushes || loops.innermost[a] != loops.innermost[b] || !dominates(&ipdom, b, a) {
            continue;
        }
        let header = loops.innermost[a].map(|l| loops.loops[l].header);
        // The blocks between: from a's successors up to b.
        let mut work: Vec<usize> = successors[a].clone();
        let mut clean = true;
        while let Some(x) = work.pop() {
            if x == b || std::mem::replace(&mut seen_by[x], b) == b {
                continue;
            }
            if blocks[x].flushes || Some(x) == header || x == a {
                clean = false;
                break;
            }
            work.extend(&successors[x]);
        }
        if clean {
            into[b] = Some(a);
        }
    }
    let mut direct_counts: Vec<[u64; 4]> = vec![[0; 4]; blocks.len()];
    for b in 0..blocks.len() {
        if !direct(b) {
            continue;
        }
        let mut top = b;
        while let Some(a) = into[top] {
            top = a;
        }
        add(&mut direct_counts[top], blocks[b].counts.unwrap_or_default(), 1);
    }
    direct_counts
}

/// The flushing blocks that can come first after `site` (itself, if it flushes: its folds come
/// before its flush).
fn next_flushes(blocks: &[Block], site: usize) -> Vec<usize> {
    let mut seen = vec![false; blocks.len()];
    let mut found = Vec::new();
    let mut work = vec![site];
    while let Some(b) = work.pop() {
        if std::mem::replace(&mut seen[b], true) {
            continue;
        }
        if blocks[b].flushes {
            found.push(b);
        } else {
            work.extend(&blocks[b].successors);
        }
    }
    found
}

/// `total += times · counts`, per class, wrapping.
fn add(total: &mut [u64; 4], counts: [u64; 4], times: u64) {
    for (t, c) in total.iter_mut().zip(counts) {
        *t = t.wrapping_add(c.wrapping_mul(times));
    }
}

/// The blocks that can run after `from` in one iteration of the loop `in_loop` (no edge back to
/// `header` taken), `from` included.
fn reachable_within(successors: &[Vec<usize>], in_loop: &[bool], header: usize, from: usize) -> Vec<bool> {
    let mut seen = vec![false; successors.len()];
    let mut work = vec![from];
    while let Some(b) = work.pop() {
        if !std::mem::replace(&mut seen[b], true) {
            work.extend(successors[b].iter().copied().filter(|&s| in_loop[s] && s != header));
        }
    }
    seen
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
    /// Each block's immediate dominator (the entry's is itself; an unreachable block has none).
    idom: Vec<Option<usize>>,
}

impl Loops {
    /// Whether every path from the entry to `b` passes `a`.
    pub fn dominates(&self, a: usize, b: usize) -> bool {
        dominates(&self.idom, a, b)
    }

    /// Finds the natural loops of the graph whose block `b` branches to `successors[b]`.
    /// Blocks the entry cannot reach are in no loop, and so is every block of a graph too large
    /// to analyse.
    pub fn find(successors: &[Vec<usize>]) -> Loops {
        if successors.len() > MAX_BLOCKS {
            return Loops { loops: Vec::new(), innermost: vec![None; successors.len()], idom: vec![None; successors.len()] };
        }
        let n = successors.len();
        let predecessors = predecessors(successors);
        let idom = dominators(successors, &predecessors);
        let dominates = |a: usize, b: usize| dominates(&idom, a, b);
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
        Loops { loops, innermost, idom }
    }
}

fn dominates(idom: &[Option<usize>], a: usize, mut b: usize) -> bool {
    loop {
        if a == b {
            return true;
        }
        match idom[b] {
            Some(up) if up != b => b = up,
            _ => return false,
        }
    }
}

/// Immediate dominators (Cooper, Harvey and Kennedy, "A Simple, Fast Dominance Algorithm"): the
/// entry is its own, an unreachable block has none.
fn dominators(successors: &[Vec<usize>], predecessors: &[Vec<usize>]) -> Vec<Option<usize>> {
    dominators_from(0, successors, predecessors)
}

/// Immediate dominators in the graph rooted at `root`.
fn dominators_from(root: usize, successors: &[Vec<usize>], predecessors: &[Vec<usize>]) -> Vec<Option<usize>> {
    let n = successors.len();
    if n == 0 {
        return Vec::new();
    }
    let order = reverse_postorder(root, successors);
    let mut rank = vec![usize::MAX; n];
    for (i, &b) in order.iter().enumerate() {
        rank[b] = i;
    }
    let mut idom: Vec<Option<usize>> = vec![None; n];
    idom[root] = Some(root);
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

/// Immediate post-dominators: dominators of the reversed graph, rooted at a virtual exit
/// (index `successors.len()`) that every block without successors leads to. A block from which
/// no exit can be reached has none.
fn post_dominators(successors: &[Vec<usize>], predecessors: &[Vec<usize>]) -> Vec<Option<usize>> {
    let exit = successors.len();
    let mut reversed: Vec<Vec<usize>> = predecessors.to_vec();
    reversed.push((0..exit).filter(|&b| successors[b].is_empty()).collect());
    let mut into: Vec<Vec<usize>> = successors.to_vec();
    for (b, succs) in into.iter_mut().enumerate() {
        if successors[b].is_empty() {
            succs.push(exit);
        }
    }
    into.push(Vec::new());
    dominators_from(exit, &reversed, &into)
}

/// The blocks reachable from `root`, each before its successors except along back edges.
fn reverse_postorder(root: usize, successors: &[Vec<usize>]) -> Vec<usize> {
    let n = successors.len();
    let mut seen = vec![false; n];
    let mut post = Vec::with_capacity(n);
    // An explicit stack: functions with many thousands of blocks would overflow recursion.
    let mut stack = vec![(root, 0usize)];
    seen[root] = true;
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

    /// A graph of `edges`; `calls` flush (on a cold path), `steps` step an induction variable,
    /// every block counts `classes[b]` classes.
    fn place_in(edges: &[&[usize]], calls: &[usize], steps: &[usize], classes: &[usize]) -> Placement {
        let blocks: Vec<Block> = (0..edges.len())
            .map(|b| Block {
                successors: edges[b].to_vec(),
                flushes: calls.contains(&b),
                cold: calls.contains(&b),
                counts: counts(classes[b]),
                steps: steps.contains(&b),
                counted: steps.contains(&b),
            })
            .collect();
        place(&blocks, &Loops::find(&edges.iter().map(|e| e.to_vec()).collect::<Vec<_>>()))
    }

    /// Counts of `classes` classes (1: total only), or none for 0.
    fn counts(classes: usize) -> Option<[u64; 4]> {
        (classes > 0).then(|| std::array::from_fn(|c| if c == 3 || c < classes - 1 { 1 + c as u64 } else { 0 }))
    }

    /// The blocks each block folds, and whether within their loop.
    fn folded(p: &Placement) -> Vec<Vec<(usize, bool)>> {
        p.folds.iter().map(|f| f.iter().map(|f| (f.block, f.within)).collect()).collect()
    }

    #[test]
    fn a_call_free_loop_counts_executions_and_its_exits_fold_them() {
        // 0 -> 1 -> 2 -> 1 | 3 (exit), 1 -> 4 (early exit)
        let p = place_in(&[&[1], &[2, 4], &[1, 3], &[], &[]], &[3, 4], &[], &[2, 3, 2, 2, 2]);
        assert_eq!(p.counting, [Direct, Executions, Executions, Direct, Direct]);
        assert_eq!(folded(&p), [vec![], vec![], vec![], vec![(1, false), (2, false)], vec![(1, false), (2, false)]]);
        assert!(p.entries.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_block_stepping_an_induction_variable_is_counted_by_it_and_its_entries_record_the_start() {
        // 0 -> 1 (self loop, steps) -> 2; 3 also enters the loop: 0 -> 3 -> 1
        let p = place_in(&[&[1, 3], &[1, 2], &[], &[1]], &[2], &[1], &[2, 1, 2, 2]);
        assert_eq!(p.counting, [Direct, Steps, Direct, Direct]);
        assert_eq!(folded(&p)[2], [(1, false)]);
        assert_eq!(p.entries, [vec![1], vec![], vec![], vec![1]]);
    }

    #[test]
    fn outer_loops_count_steps_and_followers_but_not_executions() {
        // 0 -> 1 (outer header, steps) -> 2 (inner self loop) -> 3 (outer latch) -> 1 | 4
        let p = place_in(&[&[1], &[2], &[2, 3], &[1, 4], &[]], &[4], &[1], &[2; 5]);
        assert_eq!(p.counting, [Direct, Steps, Executions, Follows, Direct]);
        assert_eq!(folded(&p)[3], [(2, false)]);
        assert_eq!(folded(&p)[4], [(1, false)]);
        // The latch's counts ride on the header's steps.
        assert_eq!(p.per_execution[1], [2, 0, 0, 8]);
        assert!(p.folds[4][0].corrections.is_empty());
        assert_eq!(p.settles[4], [1, 2]);
        assert_eq!(p.entries[0], [1]);
    }

    #[test]
    fn leaving_mid_iteration_corrects_for_the_followers_that_did_or_did_not_run() {
        // 0 -> 1 (header) -> 2 | 5 (early exit); 2 (steps) -> 3 | 5; 3 (latch) -> 1 | 4
        let p = place_in(&[&[1], &[2, 5], &[3, 5], &[1, 4], &[], &[]], &[4, 5], &[2], &[2; 6]);
        assert_eq!(p.counting, [Direct, Follows, Steps, Follows, Direct, Direct]);
        // Each step is an iteration of all three blocks. Leaving from 1, the header ran once
        // more than the steps; leaving from 2 (after the step), the latch ran once fewer.
        let at5 = &p.folds[5][0];
        assert_eq!(p.per_execution[2], [3, 0, 0, 12]);
        assert_eq!(at5.corrections, [(1, [1, 0, 0, 4]), (2, [1u64.wrapping_neg(), 0, 0, 4u64.wrapping_neg()])]);
        assert!(p.folds[4][0].corrections.is_empty());
    }

    #[test]
    fn a_cold_call_in_a_loop_folds_its_counts_first_and_cannot_count_by_steps() {
        // 0 -> 1 (calls, cold, steps) -> 2 (steps) -> 1 | 3: 1 cannot count by steps (its
        // flush may come before its step), so it follows 2, and its flush folds the loop's
        // counts so far.
        let p = place_in(&[&[1], &[2], &[1, 3], &[]], &[1, 3], &[1, 2], &[2, 2, 2, 2]);
        assert_eq!(p.counting, [Direct, Follows, Steps, Direct]);
        assert_eq!(folded(&p), [vec![], vec![(2, true)], vec![], vec![(2, false)]]);
        assert_eq!(p.per_execution[2], [2, 0, 0, 8]);
        // At 1's flush, 1 has run in the iteration under way and 2 has not stepped yet: 1's
        // counts are added before the flush and taken back after it (2's next step counts them).
        assert_eq!(p.folds[1][0].corrections, [(1, [1, 0, 0, 4])]);
        assert_eq!(p.restarts[1], [1u64.wrapping_neg(), 0, 0, 4u64.wrapping_neg()]);
        assert_eq!(p.restarts[3], [0; 4]);
    }

    #[test]
    fn a_loop_with_a_hot_call_adds_its_counts() {
        // 0 -> 1 (steps) -> 2 (calls, not cold) -> 1 | 3
        let successors: [&[usize]; 4] = [&[1], &[2], &[1, 3], &[]];
        let blocks: Vec<Block> = (0..4)
            .map(|b| Block { successors: successors[b].to_vec(), flushes: b >= 2, cold: false, counts: counts(2), steps: b == 1, counted: true })
            .collect();
        let p = place(&blocks, &Loops::find(&successors.iter().map(|e| e.to_vec()).collect::<Vec<_>>()));
        assert_eq!(p.counting, [Direct; 4]);
    }

    #[test]
    fn a_block_that_always_follows_without_a_flush_between_adds_its_counts_early() {
        // 0 -> 1 | 2 -> 3 (returns): 3 always runs after 0, with no flush between.
        let p = place_in(&[&[1, 2], &[3], &[3], &[]], &[3], &[], &[2, 2, 2, 2]);
        assert_eq!(p.counting, [Direct; 4]);
        assert_eq!(p.direct, [[2, 0, 0, 8], [1, 0, 0, 4], [1, 0, 0, 4], [0; 4]]);
        // A call in one arm would see 3's counts before 3 ran: 3 adds its own.
        let p = place_in(&[&[1, 2], &[3], &[3], &[]], &[1, 3], &[], &[2, 2, 2, 2]);
        assert_eq!(p.direct[3], [1, 0, 0, 4]);
        // Inside a loop with a hot call, the latch follows the header in every iteration.
        // 0 -> 1 (header) -> 2 | 3 -> 4 (calls, latch) -> 1 | 5
        let successors: [&[usize]; 6] = [&[1], &[2, 3], &[4], &[4], &[1, 5], &[]];
        let blocks: Vec<Block> = (0..6)
            .map(|b| Block { successors: successors[b].to_vec(), flushes: b >= 4, cold: false, counts: counts(2), steps: false, counted: false })
            .collect();
        let p = place(&blocks, &Loops::find(&successors.iter().map(|e| e.to_vec()).collect::<Vec<_>>()));
        assert_eq!(p.direct[1], [2, 0, 0, 8]);
        assert_eq!(p.direct[4], [0; 4]);
        // It does not reach into the loop from before it: 1 runs once per iteration, 0 once.
        assert_eq!(p.direct[0], [1, 0, 0, 4]);
    }

    #[test]
    fn a_function_too_large_to_analyse_adds_every_block_directly() {
        let n = MAX_BLOCKS + 1;
        let blocks: Vec<Block> = (0..n)
            .map(|b| Block { successors: if b + 1 < n { vec![b + 1, b] } else { vec![] }, counts: counts(2), steps: true, ..Block::default() })
            .collect();
        let p = place(&blocks, &Loops::find(&blocks.iter().map(|b| b.successors.clone()).collect::<Vec<_>>()));
        assert!(p.counting.iter().all(|&c| c == Direct));
        assert!(p.direct.iter().all(|&d| d == [1, 0, 0, 4]));
    }

    #[test]
    fn a_block_of_one_class_adds_its_counts() {
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
