//! ringkv's deterministic simulator: one seed decides a whole cluster's run, its faults
//! and its workload, and checkers judge the history the clients recorded.

pub mod check;
pub mod history;
