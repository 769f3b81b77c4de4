//! The static report: what the pass found in each function.

use serde::{Deserialize, Serialize};

use crate::classify::ClassCounts;

/// Static operation counts for one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionReport {
    /// The symbol name.
    pub name: String,
    /// The demangled name (the symbol name again when it is not a Rust symbol).
    pub demangled: String,
    /// Basic blocks in the function.
    pub blocks: usize,
    /// Instructions of each class in the function's body, each counted once.
    #[serde(flatten)]
    pub counts: ClassCounts,
}

impl FunctionReport {
    pub(crate) fn new(name: String, blocks: usize, counts: ClassCounts) -> Self {
        let demangled = format!("{:#}", rustc_demangle::demangle(&name));
        FunctionReport { name, demangled, blocks, counts }
    }
}

/// The report for a whole module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every function with a body, in module order.
    pub functions: Vec<FunctionReport>,
    /// Blocks across all functions.
    pub blocks: usize,
    /// Counts across all functions.
    pub totals: ClassCounts,
}

impl Report {
    pub(crate) fn finish(&mut self) {
        self.blocks = self.functions.iter().map(|f| f.blocks).sum();
        self.totals = ClassCounts::default();
        for f in &self.functions {
            self.totals += f.counts;
        }
    }

    /// The function named `name` (symbol or demangled name).
    pub fn function(&self, name: &str) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.name == name || f.demangled == name)
    }
}
