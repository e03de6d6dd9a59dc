mod compact;
mod harness;
mod props;
mod units;
