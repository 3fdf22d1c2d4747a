//! The operator token: its text form, the `Authorization: Bearer` header,
//! and the token file in central's data directory.
//!
//! The file is created with mode 0600 in one `open(2)` (`create_new`, so
//! there is no moment when it exists with looser permissions and no race
//! with a second central), inside a directory created 0700. A file or
//! directory that group or others can access is refused, never "fixed".
//! Only a SHA-256 digest of the token is kept in memory for comparisons,
//! which are constant-time.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

/// Name of the token file in central's data directory.
pub const TOKEN_FILE_NAME: &str = "operator.token";
/// Random bytes in a generated token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Accepted token lengths, in characters. 32 is the floor for a token an
/// operator writes by hand; generated ones have 64.
const TOKEN_CHARS: std::ops::RangeInclusive<usize> = 32..=512;

/// Errors setting up or reading the token file. None of them contains the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The data directory or token file could not be made private, or is
    /// accessible to other users (the error names the path and the fix).
    #[error("central: {0}")]
    Private(#[from] strata_net::files::FilesError),
    /// The token file could not be read, created or written.
    #[error("operator token file {path}: {error}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// OS error.
        error: std::io::Error,
    },
    /// The token file exists but is not a regular file.
    #[error("operator token file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The token file does not hold a usable token.
    #[error("operator token file {path}: {why}")]
    Format {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it (never the token itself).
        why: TokenFormatError,
    },
    /// The OS random number generator failed.
    #[error("cannot generate an operator token: the OS random number generator failed")]
    Random,
}

/// Why a string is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Too short or too long.
    #[error("a token must be {min}-{max} characters, not {len}", min = TOKEN_CHARS.start(), max = TOKEN_CHARS.end())]
    Length {
        /// Its length.
        len: usize,
    },
    /// A space, control or non-ASCII character.
    #[error("a token may only contain visible ASCII characters (no spaces)")]
    Charset,
}

/// An API token. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A new 256-bit token from the OS random number generator.
    pub fn generate() -> Result<Token, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenError::Random)?;
        Ok(Token::from_bytes(bytes))
    }

    /// The token of 32 random bytes: 64 lowercase hex digits.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Token {
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A token from a file's text: surrounding whitespace (the trailing
    /// newline) is ignored.
    pub fn parse(text: &str) -> Result<Token, TokenFormatError> {
        let t = text.trim();
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenFormatError::Charset);
        }
        if !TOKEN_CHARS.contains(&t.len()) {
            return Err(TokenFormatError::Length { len: t.len() });
        }
        Ok(Token(t.to_owned()))
    }

    /// The token text, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What central keeps to compare against.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.0.as_bytes())
    }
}

/// SHA-256 of a token. Comparing digests in constant time leaks neither
/// the token's bytes nor its length through timing.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

impl TokenDigest {
    /// The digest of presented token bytes.
    pub fn of(bytes: &[u8]) -> TokenDigest {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenDigest(out)
    }

    /// A digest kept elsewhere (central's replicated state).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenDigest {
        TokenDigest(bytes)
    }

    /// The digest's bytes (to replicate it; never the token).
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Why an `Authorization` header is not a usable bearer credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Not `Bearer <token>` (another scheme, no token, stray spaces or
    /// bytes that are not visible ASCII).
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// More than one `Authorization` header.
    #[error("send one Authorization header, not several")]
    Repeated,
}

/// The token of an `Authorization: Bearer <token>` header value. The
/// scheme is case-insensitive (RFC 9110 §11.1); spaces separate it from
/// the token, which has none.
pub fn parse_bearer(value: &[u8]) -> Result<&str, BearerError> {
    let text = std::str::from_utf8(value).map_err(|_| BearerError::Malformed)?;
    let (scheme, rest) = text.split_once(' ').ok_or(BearerError::Malformed)?;
    let token = rest.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an
/// existing one is private. Fails loudly otherwise.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TokenError> {
    Ok(strata_net::files::ensure_private_dir(dir)?)
}

/// Whether [`load_or_create`] made a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Read from an existing file.
    Loaded,
    /// Generated and written now.
    Created,
}

/// Reads the token at `path`, or creates the file (mode 0600 from the
/// start) holding `fresh` (a [`Token::generate`]d one in production). The
/// directory must exist.
pub fn load_or_create(path: &Path, fresh: Token) -> Result<(Token, TokenOrigin), TokenError> {
    let io = |error| TokenError::Io {
        path: path.to_owned(),
        error,
    };
    match std::fs::metadata(path) {
        Ok(_) => return load(path).map(|t| (t, TokenOrigin::Loaded)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let token = fresh;
    let created = strata_net::files::private_options()
        .write(true)
        .create_new(true)
        .open(path);
    let mut file = match created {
        Ok(f) => f,
        // Another central created it in between: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return load(path).map(|t| (t, TokenOrigin::Loaded))
        }
        Err(e) => return Err(io(e)),
    };
    let written = file
        .write_all(format!("{}\n", token.expose()).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A half-written token would be refused at the next start anyway;
        // remove it so that start creates a fresh one.
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    // The file's directory entry must survive a crash too.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok((token, TokenOrigin::Created))
}

/// Reads an existing token file, refusing one that group or others can
/// access.
pub fn load(path: &Path) -> Result<Token, TokenError> {
    let io = |error| TokenError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(TokenError::NotAFile {
            path: path.to_owned(),
        });
    }
    strata_net::files::check_private_file(path)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    Token::parse(&text).map_err(|why| TokenError::Format {
        path: path.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    fn fixed(b: u8) -> Token {
        Token::from_bytes([b; TOKEN_BYTES])
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(parse_bearer(b"Bearer abc"), Ok("abc"));
        assert_eq!(parse_bearer(b"bearer   abc"), Ok("abc"));
        assert_eq!(
            parse_bearer(b"BEARER a.b-c_d~e+f/g=="),
            Ok("a.b-c_d~e+f/g==")
        );
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Basic dXNlcjpwYXNz",
            b"Bearerabc",
            b"Bearer abc def",
            b"Bearer abc\t",
            b"Bearer \xffabc",
            b"abc",
            b"",
        ] {
            assert_eq!(
                parse_bearer(bad),
                Err(BearerError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn token_text() {
        let t = Token::generate().unwrap();
        assert_ne!(t, Token::generate().unwrap());
        assert_eq!(t.expose().len(), 64);
        assert!(t.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Token::parse(&format!("  {}\n", t.expose())), Ok(t.clone()));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(
            Token::parse("short"),
            Err(TokenFormatError::Length { len: 5 })
        );
        assert_eq!(Token::parse(""), Err(TokenFormatError::Length { len: 0 }));
        assert_eq!(
            Token::parse(&"x".repeat(513)),
            Err(TokenFormatError::Length { len: 513 })
        );
        assert_eq!(
            Token::parse(&format!("{} {}", "a".repeat(20), "b".repeat(20))),
            Err(TokenFormatError::Charset)
        );
        assert_eq!(
            Token::parse(&format!("{}é", "a".repeat(40))),
            Err(TokenFormatError::Charset)
        );
    }

    #[test]
    fn digests_compare_by_content() {
        let a = Token::parse(&"a".repeat(40)).unwrap().digest();
        assert!(a.matches(&TokenDigest::of("a".repeat(40).as_bytes())));
        assert!(!a.matches(&TokenDigest::of("a".repeat(39).as_bytes())));
        assert!(!a.matches(&TokenDigest::of(b"")));
    }

    #[test]
    fn token_file_is_created_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/central");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        let path = dir.join(TOKEN_FILE_NAME);
        let (t, origin) = load_or_create(&path, fixed(0xab)).unwrap();
        assert_eq!(origin, TokenOrigin::Created);
        assert_eq!(t.expose(), "ab".repeat(32));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", "ab".repeat(32))
        );
        // The next start reads the same token.
        let (again, origin) = load_or_create(&path, fixed(0xcd)).unwrap();
        assert_eq!((again, origin), (t, TokenOrigin::Loaded));
    }

    #[test]
    fn loose_permissions_and_bad_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(TOKEN_FILE_NAME);
        std::fs::write(&path, "a".repeat(40)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create(&path, fixed(1)).unwrap_err().to_string();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains(&"a".repeat(40)), "the token leaked: {err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "tooshort\n").unwrap();
        let err = load_or_create(&path, fixed(1)).unwrap_err().to_string();
        assert!(err.contains("32-512 characters, not 8"), "{err}");
        assert!(!err.contains("tooshort"), "the content leaked: {err}");

        let open = root.path().join("open");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&open)
            .unwrap();
        let err = ensure_private_dir(&open).unwrap_err().to_string();
        assert!(
            err.contains("mode 0755") && err.contains("chmod -R go-rwx"),
            "{err}"
        );

        let err = load_or_create(root.path(), fixed(1)).unwrap_err();
        assert!(matches!(err, TokenError::NotAFile { .. }), "{err}");
        let missing_dir = root.path().join("nope").join(TOKEN_FILE_NAME);
        let err = load_or_create(&missing_dir, fixed(1)).unwrap_err();
        assert!(matches!(err, TokenError::Io { .. }), "{err}");
    }
}
