//! The one way an error is printed with its causes, for messages and logs:
//! `outer: inner: root`.
use std::error::Error;
use std::fmt;

/// `error` followed by each of its sources, `outer: inner: root`. Log with
/// `error = %error_chain(&e)`; format with `{}`. An error's own message names what
/// failed and leaves its cause to `source()`: the chain adds it.
pub fn error_chain<'a>(error: &'a (dyn Error + 'a)) -> ErrorChain<'a> {
    ErrorChain(error)
}

/// Displays an error with its sources (see [`error_chain`]).
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(&'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot read the checkpoint")]
        Read { source: Middle },
        #[error("nothing to read")]
        Alone,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open /x")]
    struct Middle {
        source: std::io::Error,
    }

    #[test]
    fn an_error_prints_with_every_cause_in_order() {
        let error = Outer::Read { source: Middle { source: std::io::Error::other("disk on fire") } };
        assert_eq!(error_chain(&error).to_string(), "cannot read the checkpoint: cannot open /x: disk on fire");
        assert_eq!(format!("{}", error_chain(&Outer::Alone)), "nothing to read");
        let dynamic: &dyn Error = &error;
        assert_eq!(error_chain(dynamic).to_string(), error_chain(&error).to_string());
    }
}
