//! One connection's closed loop: keep up to `pipeline` requests in flight, time each from
//! send to answer, and carry on over a new connection if the old one drops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ringkv_core::proto::{ClientRequest, ClientResponse};

use super::report::{OpKind, Tally};
use crate::client::{Client, ClientError};

/// Drives `client` with the operations `next_op` hands out until it hands out none and
/// every answer is in. Adds each finished operation to `tally` and to `done` (for the
/// progress bar). Fails only if a dropped connection cannot be made again.
pub fn drive(
    client: &mut Client,
    pipeline: usize,
    mut next_op: impl FnMut() -> Option<(OpKind, ClientRequest)>,
    tally: &mut Tally,
    done: &AtomicU64,
) -> Result<(), ClientError> {
    let mut in_flight: VecDeque<(OpKind, Instant)> = VecDeque::with_capacity(pipeline);
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < pipeline {
            let Some((kind, request)) = next_op() else {
                exhausted = true;
                break;
            };
            let sent_at = Instant::now();
            if let Err(err) = client.send(&request) {
                // The operation whose turn it was is lost too: it had its ticket.
                lose(&mut in_flight, 1, tally, done);
                reconnect(client, err)?;
                continue;
            }
            in_flight.push_back((kind, sent_at));
        }
        let Some(&(kind, sent_at)) = in_flight.front() else {
            tally.finish();
            return Ok(());
        };
        match client.recv() {
            Ok(answer) => {
                in_flight.pop_front();
                let error = match &answer.response {
                    ClientResponse::Error(reply) => Some(reply.code),
                    _ => None,
                };
                tally.answered(kind, sent_at.elapsed(), error);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                lose(&mut in_flight, 0, tally, done);
                reconnect(client, err)?;
            }
        }
    }
}

/// Counts every request in flight, plus `extra`, as lost.
fn lose(
    in_flight: &mut VecDeque<(OpKind, Instant)>,
    extra: u64,
    tally: &mut Tally,
    done: &AtomicU64,
) {
    let lost = in_flight.len() as u64 + extra;
    in_flight.clear();
    tally.lost(lost);
    done.fetch_add(lost, Ordering::Relaxed);
}

/// Replaces a failed connection, or reports why it cannot be.
fn reconnect(client: &mut Client, cause: ClientError) -> Result<(), ClientError> {
    tracing::warn!(addr = client.addr(), err = %cause, "connection lost; reconnecting");
    *client = Client::connect(client.addr())?;
    Ok(())
}
