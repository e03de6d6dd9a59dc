//! The console's command language: one command per line, the first word names it.

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `get KEY`
    Get(String),
    /// `put KEY VALUE`: VALUE is the rest of the line, spaces included.
    Put(String, String),
    /// `del KEY`
    Del(String),
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
  get KEY          print the value of KEY
  put KEY VALUE    set KEY to VALUE (the rest of the line, spaces included)
  del KEY          delete KEY
  status           show the ring: servers in ring order
  help             show this help
  exit, quit       leave (also Ctrl-D or Ctrl-C)
keys have no spaces here; use `ringkv put` for such keys";

/// Parses one line; the error is the usage line to show.
pub fn parse(line: &str) -> Result<Command, String> {
    let (word, rest) = split_word(line);
    let command = word.to_ascii_lowercase();
    match command.as_str() {
        "" => Ok(Command::Nothing),
        "get" => one_key(rest, "get KEY").map(Command::Get),
        "del" => one_key(rest, "del KEY").map(Command::Del),
        "put" => {
            let (key, value) = split_word(rest);
            // A stray Enter after `put k ` must not wipe the value: empty values are
            // written with the one-shot command (`ringkv put KEY ""`).
            if key.is_empty() || value.is_empty() {
                return Err("usage: put KEY VALUE (VALUE not empty)".into());
            }
            Ok(Command::Put(key.to_owned(), value.to_owned()))
        }
        "status" => no_args(rest, "status").map(|()| Command::Status),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        _ => Err(format!("unknown command {word:?}; type help")),
    }
}

/// The first word of `text`, and what follows the whitespace after it.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => {
            let (word, rest) = text.split_at(end);
            (word, rest.trim_start())
        }
        None => (text, ""),
    }
}

fn one_key(rest: &str, usage: &str) -> Result<String, String> {
    let (key, extra) = split_word(rest);
    if key.is_empty() || !extra.trim().is_empty() {
        return Err(format!("usage: {usage}"));
    }
    Ok(key.to_owned())
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

    #[test]
    fn put_keeps_the_rest_of_the_line() {
        assert_eq!(
            parse("put greeting hello,  big world "),
            Ok(Command::Put("greeting".into(), "hello,  big world ".into()))
        );
        assert_eq!(
            parse("  PUT k\tv"),
            Ok(Command::Put("k".into(), "v".into()))
        );
    }

    #[test]
    fn put_needs_a_value() {
        assert!(parse("put k ").is_err());
        assert!(parse("put k").is_err());
        assert!(parse("put").is_err());
    }

    #[test]
    fn keys_and_commands() {
        assert_eq!(parse("get k1"), Ok(Command::Get("k1".into())));
        assert_eq!(parse("del k1 "), Ok(Command::Del("k1".into())));
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
