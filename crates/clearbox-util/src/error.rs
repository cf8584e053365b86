//! Error chains as one line.

/// `e` and its `source()` chain on one line (`outer: inner: root`), skipping a cause whose
/// text the line already holds: libraries that put their source's text in their own message
/// would otherwise repeat it ("x failed: io: x failed: io"). The one formatting for logs,
/// CLI errors and the messages that cross the host/guest channel.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(String, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn e(msg: &str, src: Option<E>) -> E {
        E(msg.into(), src.map(Box::new))
    }

    #[test]
    fn causes_follow_on_one_line_without_repeats() {
        let root = e("permission denied", None);
        let mid = e("open /x", Some(root));
        assert_eq!(
            chain(&e("create", Some(mid))),
            "create: open /x: permission denied"
        );
        // A cause whose text the message already carries is not repeated.
        let inner = e("unable to restrict sys entries", None);
        let outer = e("create c: unable to restrict sys entries", Some(inner));
        assert_eq!(chain(&outer), "create c: unable to restrict sys entries");
        assert_eq!(chain(&e("alone", Some(e("", None)))), "alone");
    }
}
