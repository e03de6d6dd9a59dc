mod harness;
mod props;
mod units;
