//! The error every command ends with: bad usage (exit status 2) or work that could not be
//! done (exit status 1). Both carry the one line shown to people.

use std::fmt;
use std::process::ExitCode;

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Bad arguments or configuration: nothing was done.
    Usage(String),
    /// The work failed.
    Runtime(String),
}

/// What a command returns: its exit status, or why it stopped.
pub type CmdResult = Result<ExitCode, Error>;

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m) | Error::Runtime(m) => m,
        }
    }

    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}
