//! The ring as a table for people: `status`, the console and `local` show the same one.

use std::fmt::Write as _;

use ringkv_core::proto::ServerStatus;

/// Renders a `statusreq` answer. `name` may label a server (local clusters name their
/// data directories); the share column tells how evenly the IDs split the key space.
pub fn render(
    servers: &[ServerStatus],
    expected: u64,
    name: &dyn Fn(u64) -> Option<String>,
) -> String {
    let mut sorted: Vec<&ServerStatus> = servers.iter().collect();
    sorted.sort_by_key(|server| server.id);
    let registered = sorted.len();
    let state = if registered as u64 >= expected {
        "ring complete"
    } else {
        "ring incomplete: GET/PUT/DEL answer unavailable"
    };
    let mut out = format!("{registered} of {expected} servers registered ({state})\n");
    if sorted.is_empty() {
        return out;
    }
    let rows: Vec<[String; 5]> = sorted
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let previous = if i == 0 {
                sorted.last().map(|last| last.id)
            } else {
                sorted.get(i - 1).map(|prev| prev.id)
            };
            [
                server.id.to_string(),
                server.addr.clone(),
                if server.up { "yes" } else { "no" }.to_owned(),
                format!(
                    "{:.1}%",
                    primary_share(previous, server.id, registered) * 100.0
                ),
                name(server.id).unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["ID", "ADDRESS", "UP", "PRIMARY", ""];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    push_row(&mut out, &header.map(str::to_owned), &widths);
    for row in &rows {
        push_row(&mut out, row, &widths);
    }
    out
}

/// The fraction of the 2^64 positions whose primary replica is the server with ID `id`:
/// those after its predecessor's ID, up to and including its own (wrapping around).
fn primary_share(previous: Option<u64>, id: u64, servers: usize) -> f64 {
    match previous {
        Some(previous) if servers > 1 => {
            let span = id.wrapping_sub(previous);
            span as f64 / 2f64.powi(64)
        }
        _ => 1.0,
    }
}

fn push_row(out: &mut String, row: &[String; 5], widths: &[usize; 5]) {
    let mut line = String::new();
    for (cell, width) in row.iter().zip(widths) {
        let _ = write!(line, "{cell:<width$}  ");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: u64, up: bool) -> ServerStatus {
        ServerStatus {
            id,
            addr: format!("127.0.0.1:{}", 4000 + id % 1000),
            up,
        }
    }

    #[test]
    fn evenly_spaced_ids_split_the_ring_evenly() {
        let step = u64::MAX / 4;
        let servers: Vec<_> = (0..4).map(|i| server(i * step, true)).collect();
        let text = render(&servers, 4, &|_| None);
        assert!(text.starts_with("4 of 4 servers registered (ring complete)"));
        assert_eq!(text.matches("25.0%").count(), 4, "{text}");
    }

    #[test]
    fn an_incomplete_ring_says_so_and_names_servers() {
        let text = render(&[server(7, false)], 2, &|id| Some(format!("server-{id}")));
        assert!(text.contains("ring incomplete"), "{text}");
        assert!(text.contains("100.0%"), "{text}");
        assert!(text.contains("server-7"), "{text}");
        assert!(text.contains(" no "), "{text}");
        assert_eq!(render(&[], 2, &|_| None).lines().count(), 1);
    }
}
