mod harness;
mod units;
