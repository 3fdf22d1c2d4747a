//! Which operator token the CLI sends to central: `--token`, else
//! `$STRATA_TOKEN`, else the file `strata up` keeps,
//! `<data-dir>/central/operator.token` (`--data-dir`, default
//! `strata-data`, as for `strata up`). Only the file is read here; the
//! environment is passed in, so tests set it without touching the process.

use std::path::{Path, PathBuf};

use central::auth::{Token, TOKEN_FILE_NAME};

use crate::monitor_spec::CliError;

/// Environment variable holding the token when `--token` is not given.
pub const TOKEN_ENV: &str = "STRATA_TOKEN";

/// Where the token sent came from (for messages; never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token`.
    Flag,
    /// `$STRATA_TOKEN`.
    Env,
    /// A token file.
    File(PathBuf),
    /// No token: the file was not there.
    Missing(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => write!(f, "the token from --token"),
            TokenSource::Env => write!(f, "the token from ${TOKEN_ENV}"),
            TokenSource::File(p) => write!(f, "the token from {}", p.display()),
            TokenSource::Missing(p) => write!(f, "no token ({} does not exist)", p.display()),
        }
    }
}

/// The token to send, if any, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The token.
    pub token: Option<Token>,
    /// Its source.
    pub source: TokenSource,
}

/// The token file of a `strata up` data dir.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("central").join(TOKEN_FILE_NAME)
}

/// `flag`, else `env`, else the token file under `data_dir` (none if it
/// does not exist). A token that is not one, or a file that cannot be
/// read, is an input error naming its source.
pub fn resolve(
    flag: Option<&str>,
    env: Option<&str>,
    data_dir: &Path,
) -> Result<ApiToken, CliError> {
    let parse = |text: &str, source: TokenSource| {
        Token::parse(text)
            .map(|t| ApiToken {
                token: Some(t),
                source: source.clone(),
            })
            .map_err(|why| CliError::Input(format!("{source} is not a token: {why}")))
    };
    if let Some(t) = flag {
        return parse(t, TokenSource::Flag);
    }
    if let Some(t) = env.filter(|e| !e.trim().is_empty()) {
        return parse(t, TokenSource::Env);
    }
    let path = token_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, TokenSource::File(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ApiToken {
            token: None,
            source: TokenSource::Missing(path),
        }),
        Err(e) => Err(CliError::Input(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))),
    }
}

/// What to tell the user when central answered 401.
pub fn unauthorized_hint(source: &TokenSource) -> String {
    format!(
        "central needs its operator token: pass --token TOKEN, set ${TOKEN_ENV}, or point \
         --data-dir at the directory `strata up` uses (the token is in \
         <data-dir>/central/operator.token); this request sent {source}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn input(e: CliError) -> String {
        match e {
            CliError::Input(m) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn flag_then_environment_then_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("central")).unwrap();
        let file = token_file(dir.path());
        std::fs::write(&file, format!("{A}\n")).unwrap();
        let got = resolve(Some(B), Some(B), dir.path()).unwrap();
        assert_eq!(
            (got.token.unwrap().expose(), got.source),
            (B, TokenSource::Flag)
        );
        let got = resolve(None, Some(B), dir.path()).unwrap();
        assert_eq!(got.source, TokenSource::Env);
        let got = resolve(None, Some("  "), dir.path()).unwrap();
        assert_eq!(
            (got.token.unwrap().expose(), got.source),
            (A, TokenSource::File(file))
        );
        let empty = tempfile::tempdir().unwrap();
        let got = resolve(None, None, empty.path()).unwrap();
        assert_eq!(got.token, None);
        let msg = got.source.to_string();
        assert!(
            msg.contains("central/operator.token does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn bad_tokens_are_input_errors_that_do_not_print_them() {
        let m = input(resolve(Some("short"), None, Path::new("/nowhere")).unwrap_err());
        assert!(m.contains("--token is not a token"), "{m}");
        let m = input(
            resolve(
                None,
                Some("has spaces in it .........................."),
                Path::new("/n"),
            )
            .unwrap_err(),
        );
        assert!(m.contains(TOKEN_ENV) && !m.contains("has spaces"), "{m}");
        let hint = unauthorized_hint(&TokenSource::Env);
        for needle in ["--token", TOKEN_ENV, "operator.token", "--data-dir"] {
            assert!(hint.contains(needle), "{needle}: {hint}");
        }
    }
}
