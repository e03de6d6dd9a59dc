//! The console's command language: one command per line, the first word names it.
//! Arguments may be quoted as redis-cli takes them (`put "a b" "c d"`), and seed 002's
//! lines `get,KEY,LEVEL` and `put,KEY,VALUE,LEVEL` are understood too.

/// The consistency levels of eventual mode (PROTOCOL.md section 2).
pub const LEVELS: [&str; 5] = ["one", "two", "three", "quorum", "all"];

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `get KEY [--consistency LEVEL]`
    Get {
        /// The key.
        key: String,
        /// The level asked for (eventual mode).
        level: Option<String>,
    },
    /// `put KEY VALUE`, or `put!` to write without the context of the last read.
    Put {
        /// The key.
        key: String,
        /// The value: the rest of the line, spaces included, or one quoted argument.
        value: String,
        /// The level asked for (eventual mode).
        level: Option<String>,
        /// Write without a context (eventual mode).
        blind: bool,
    },
    /// `del KEY`, or `del!` without the context of the last read.
    Del {
        /// The key.
        key: String,
        /// The level asked for (eventual mode).
        level: Option<String>,
        /// Write without a context (eventual mode).
        blind: bool,
    },
    /// `status`
    Status,
    /// `help` or `?`
    Help,
    /// `exit` or `quit`
    Exit,
    /// A blank line: nothing to do.
    Nothing,
}

/// What the console understands, for `help` and for mistakes.
pub const HELP: &str = "\
commands:
  get KEY                    print the value of KEY (every sibling, with its clock, on a node)
  put KEY VALUE              set KEY to VALUE (the rest of the line, spaces included);
                             on a node, after a `get` of KEY it sends that read's context,
                             so the write replaces every version the read showed
  put! KEY VALUE             on a node: write without a context (a blind write)
  del KEY, del! KEY          delete KEY (del! without a context)
  status                     show the servers or nodes and whether they are up
  help                       show this help
  exit, quit                 leave (also Ctrl-D or Ctrl-C)
on a node, get/put/del take --consistency one|two|three|quorum|all (default quorum),
and the lines get,KEY,LEVEL and put,KEY,VALUE,LEVEL work too.
quote arguments with spaces: put \"a b\" \"c d\" (\\\" and \\\\ inside double quotes)";

/// Parses one line; the error is the usage line to show.
pub fn parse(line: &str) -> Result<Command, String> {
    if let Some(command) = parse_csv(line)? {
        return Ok(command);
    }
    let Some((word, rest)) = next_token(line)? else {
        return Ok(Command::Nothing);
    };
    let command = word.to_ascii_lowercase();
    match command.as_str() {
        "get" => {
            let (key, level) = key_and_level(rest, "get KEY [--consistency LEVEL]")?;
            Ok(Command::Get { key, level })
        }
        "del" | "del!" => {
            let (key, level) = key_and_level(rest, "del KEY [--consistency LEVEL]")?;
            let blind = command == "del!";
            Ok(Command::Del { key, level, blind })
        }
        "put" | "put!" => parse_put(rest, command == "put!"),
        "status" => no_args(rest, "status").map(|()| Command::Status),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        _ => Err(format!("unknown command {word:?}; type help")),
    }
}

/// Seed 002's comma lines: `get,KEY,LEVEL` and `put,KEY,VALUE,LEVEL` (the value may hold
/// commas: the level is the last field).
fn parse_csv(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    let Some((word, rest)) = line.split_once(',') else {
        return Ok(None);
    };
    let level_of = |level: &str| -> Result<Option<String>, String> {
        let level = level.trim().to_ascii_lowercase();
        if LEVELS.contains(&level.as_str()) {
            Ok(Some(level))
        } else {
            Err(format!(
                "unknown consistency {level:?}: one of {}",
                LEVELS.join(", ")
            ))
        }
    };
    match word.trim().to_ascii_lowercase().as_str() {
        "get" => {
            let (key, level) = rest.rsplit_once(',').ok_or("usage: get,KEY,LEVEL")?;
            Ok(Some(Command::Get {
                key: non_empty(key, "get,KEY,LEVEL")?,
                level: level_of(level)?,
            }))
        }
        "put" => {
            let (key_value, level) = rest.rsplit_once(',').ok_or("usage: put,KEY,VALUE,LEVEL")?;
            let (key, value) = key_value
                .split_once(',')
                .ok_or("usage: put,KEY,VALUE,LEVEL")?;
            Ok(Some(Command::Put {
                key: non_empty(key, "put,KEY,VALUE,LEVEL")?,
                value: value.to_owned(),
                level: level_of(level)?,
                blind: false,
            }))
        }
        _ => Ok(None),
    }
}

fn non_empty(key: &str, usage: &str) -> Result<String, String> {
    if key.is_empty() {
        Err(format!("usage: {usage}"))
    } else {
        Ok(key.to_owned())
    }
}

fn parse_put(rest: &str, blind: bool) -> Result<Command, String> {
    let usage = "usage: put KEY VALUE [--consistency LEVEL] (VALUE not empty)";
    let (key, after_key) = next_token(rest)?.ok_or(usage)?;
    let after_key = after_key.trim_start();
    let (value, level) = if after_key.starts_with(['"', '\'']) {
        let (value, tail) = next_token(after_key)?.ok_or(usage)?;
        (value, level_option(tail, usage)?)
    } else {
        // Unquoted: the rest of the line, less a trailing `--consistency LEVEL`.
        match split_trailing_level(after_key) {
            Some((value, level)) => (value.to_owned(), Some(level)),
            None => (after_key.to_owned(), None),
        }
    };
    // A stray Enter after `put k ` must not wipe the value: empty values are written
    // quoted (`put k ""`) or with the one-shot command.
    if value.is_empty() && !after_key.starts_with(['"', '\'']) {
        return Err(usage.into());
    }
    Ok(Command::Put {
        key,
        value,
        level,
        blind,
    })
}

/// `VALUE --consistency LEVEL` at the end of an unquoted value.
fn split_trailing_level(text: &str) -> Option<(&str, String)> {
    let trimmed = text.trim_end();
    let (head, level) = trimmed.rsplit_once(char::is_whitespace)?;
    let level = level.to_ascii_lowercase();
    let head = head.trim_end();
    let value = head
        .strip_suffix("--consistency")
        .or_else(|| head.strip_suffix("-c"))?;
    let boundary = value.is_empty() || value.ends_with(char::is_whitespace);
    (LEVELS.contains(&level.as_str()) && boundary).then(|| (value.trim_end(), level))
}

fn key_and_level(rest: &str, usage: &str) -> Result<(String, Option<String>), String> {
    let (key, tail) = next_token(rest)?.ok_or_else(|| format!("usage: {usage}"))?;
    Ok((key, level_option(tail, usage)?))
}

/// Nothing, or `--consistency LEVEL` (`-c LEVEL`), and nothing after it.
fn level_option(text: &str, usage: &str) -> Result<Option<String>, String> {
    let Some((flag, rest)) = next_token(text)? else {
        return Ok(None);
    };
    let (level, tail) = match flag.as_str() {
        "--consistency" | "-c" => next_token(rest)?.ok_or_else(|| format!("usage: {usage}"))?,
        _ => return Err(format!("usage: {usage}")),
    };
    let level = level.to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(format!(
            "unknown consistency {level:?}: one of {}",
            LEVELS.join(", ")
        ));
    }
    if next_token(tail)?.is_some() {
        return Err(format!("usage: {usage}"));
    }
    Ok(Some(level))
}

/// The first argument of `text` (a bare word, or a quoted one as redis-cli takes it)
/// and what follows it; `None` when only spaces are left.
fn next_token(text: &str) -> Result<Option<(String, &str)>, String> {
    let text = text.trim_start();
    let mut chars = text.char_indices();
    let Some((_, first)) = chars.next() else {
        return Ok(None);
    };
    if first != '"' && first != '\'' {
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        let (word, rest) = text.split_at(end);
        return Ok(Some((word.to_owned(), rest)));
    }
    let mut word = String::new();
    let mut escaped = false;
    for (at, c) in chars {
        if escaped {
            word.push(match c {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            escaped = false;
        } else if c == '\\' && first == '"' {
            escaped = true;
        } else if c == first {
            let rest = text.get(at + c.len_utf8()..).unwrap_or("");
            if rest.starts_with(|c: char| !c.is_whitespace()) {
                return Err("a closing quote must be followed by a space or the end".into());
            }
            return Ok(Some((word, rest)));
        } else {
            word.push(c);
        }
    }
    Err("unbalanced quotes".into())
}

fn no_args(rest: &str, usage: &str) -> Result<(), String> {
    if rest.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("usage: {usage}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, level: Option<&str>, blind: bool) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            level: level.map(Into::into),
            blind,
        }
    }

    fn get(key: &str, level: Option<&str>) -> Command {
        Command::Get {
            key: key.into(),
            level: level.map(Into::into),
        }
    }

    #[test]
    fn put_keeps_the_rest_of_the_line() {
        assert_eq!(
            parse("put greeting hello,  big world "),
            Ok(put("greeting", "hello,  big world ", None, false))
        );
        assert_eq!(parse("  PUT k\tv"), Ok(put("k", "v", None, false)));
    }

    #[test]
    fn quoted_arguments_as_redis_cli_takes_them() {
        assert_eq!(
            parse(r#"put "a b" "c d""#),
            Ok(put("a b", "c d", None, false))
        );
        assert_eq!(
            parse(r#"put 'x y' 'it\s'"#),
            Ok(put("x y", r"it\s", None, false))
        );
        assert_eq!(
            parse(r#"put k "say \"hi\"\n""#),
            Ok(put("k", "say \"hi\"\n", None, false))
        );
        assert_eq!(parse(r#"put k """#), Ok(put("k", "", None, false)));
        assert_eq!(parse(r#"get "a b""#), Ok(get("a b", None)));
        assert!(parse(r#"get "a b"#).is_err(), "unbalanced");
        assert!(parse(r#"get "a"b"#).is_err(), "text glued to a quote");
    }

    #[test]
    fn levels_blind_writes_and_seed_lines() {
        assert_eq!(parse("get k --consistency one"), Ok(get("k", Some("one"))));
        assert_eq!(parse("get k -c ALL"), Ok(get("k", Some("all"))));
        assert!(parse("get k --consistency most").is_err());
        assert_eq!(parse("put! k v w"), Ok(put("k", "v w", None, true)));
        assert_eq!(
            parse("put k v w --consistency two"),
            Ok(put("k", "v w", Some("two"), false))
        );
        assert_eq!(
            parse(r#"put k "v" -c quorum"#),
            Ok(put("k", "v", Some("quorum"), false))
        );
        assert_eq!(
            parse("del! k"),
            Ok(Command::Del {
                key: "k".into(),
                level: None,
                blind: true
            })
        );
        assert_eq!(parse("get,k1,two"), Ok(get("k1", Some("two"))));
        assert_eq!(
            parse("put,k1,a,b,one"),
            Ok(put("k1", "a,b", Some("one"), false))
        );
        assert!(parse("get,k1,sometimes").is_err());
        assert!(parse("put,k1,one").is_err());
    }

    #[test]
    fn put_needs_a_value() {
        assert!(parse("put k ").is_err());
        assert!(parse("put k").is_err());
        assert!(parse("put").is_err());
    }

    #[test]
    fn keys_and_commands() {
        assert_eq!(parse("get k1"), Ok(get("k1", None)));
        assert_eq!(
            parse("del k1 "),
            Ok(Command::Del {
                key: "k1".into(),
                level: None,
                blind: false
            })
        );
        assert!(parse("get a b").is_err());
        assert!(parse("get").is_err());
        assert_eq!(parse("status"), Ok(Command::Status));
        assert!(parse("status now").is_err());
        assert_eq!(parse("   "), Ok(Command::Nothing));
        assert_eq!(parse("quit"), Ok(Command::Exit));
        assert_eq!(parse("?"), Ok(Command::Help));
        assert!(parse("frobnicate").unwrap_err().contains("frobnicate"));
    }
}
