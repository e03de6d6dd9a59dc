//! Tests of the versions component: unit tests of the rules, property tests of the join
//! laws and the encodings.

mod props;
mod units;
