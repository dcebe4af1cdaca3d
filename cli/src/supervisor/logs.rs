//! Instance output: every line a service prints goes to its deployment's log file
//! (`.stack/logs/<deployment>.log`), to a ring of recent lines (for readiness errors and
//! `stack logs`), to live followers (`stack logs -f`) and, when asked, to the terminal with a
//! coloured `writer.0 | ` prefix. Known secret values are replaced by `***` before a line goes
//! anywhere. This module never starts or stops processes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use console::Style;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::broadcast;

/// How many recent lines each deployment keeps in memory.
const RING_LINES: usize = 1000;
/// The longest line kept whole; longer output is split into lines of this size.
const MAX_LINE: u64 = 64 * 1024;

/// One line of output of one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `writer.0`: service and instance number.
    pub source: String,
    pub text: String,
}

impl LogLine {
    /// The stored form: `<time_ms> <source> | <text>`.
    fn to_stored(&self) -> String {
        format!("{} {} | {}", self.time_ms, self.source, self.text)
    }

    /// Whether it is instance `instance`'s line (its source is `<service>.<instance>`); any
    /// instance's when `None`.
    pub fn is_of(&self, instance: Option<usize>) -> bool {
        instance.is_none_or(|wanted| {
            self.source
                .rsplit_once('.')
                .and_then(|(_, number)| number.parse::<usize>().ok())
                == Some(wanted)
        })
    }

    /// Reads a stored line back; `None` for a line that is not in the stored form.
    pub fn from_stored(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let (source, text) = rest.split_once(" | ")?;
        Some(LogLine {
            time_ms: time.parse().ok()?,
            source: source.to_string(),
            text: text.to_string(),
        })
    }
}

/// Where the log files live, under `.stack/`.
pub const LOGS_DIR: &str = "logs";

/// `<project>/.stack/logs`.
pub fn logs_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(crate::state::STATE_DIR).join(LOGS_DIR)
}

/// Where the log file of a deployment lives.
pub fn log_path(logs_dir: &Path, deployment_id: &str) -> PathBuf {
    logs_dir.join(format!("{deployment_id}.log"))
}

/// A deployment that is neither running nor kept but left a log: one whose start failed
/// (a redeploy's error names it for `stack logs`). Only a plain id is looked for.
pub fn unkept_with_log(logs_dir: &Path, target: &str) -> Option<String> {
    let plain = !target.is_empty()
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (plain && log_path(logs_dir, target).is_file()).then(|| target.to_string())
}

/// Values that must never be written anywhere (secrets from the environment).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Values shorter than 4 characters are skipped: masking `1` everywhere would help nobody.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    /// This redactor's secrets and `more`.
    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Redactor::new(self.secrets.iter().cloned().chain(more))
    }

    /// Where to cut `bytes`, a piece of output longer than a line may be, so that no secret
    /// is split between the two pieces: the rest (shorter than the longest secret, or the
    /// secret that would straddle the cut) is held back for the next piece. Also never cuts a
    /// UTF-8 character in two. `bytes.len()` when nothing needs holding back.
    pub fn safe_cut(&self, bytes: &[u8]) -> usize {
        let Some(longest) = self.secrets.first().map(String::len) else {
            return bytes.len();
        };
        let mut cut = bytes.len().saturating_sub(longest - 1);
        // A secret that starts before the cut and ends after it moves the cut to its start.
        while let Some(start) = self.secrets.iter().find_map(|secret| {
            let secret = secret.as_bytes();
            (cut.saturating_sub(secret.len() - 1)..cut)
                .find(|&start| bytes[start..].starts_with(secret))
        }) {
            cut = start;
        }
        while cut > 0 && cut < bytes.len() && (bytes[cut] & 0b1100_0000) == 0b1000_0000 {
            cut -= 1;
        }
        // A piece that is all held back (a secret longer than a line) goes out whole.
        if cut == 0 {
            bytes.len()
        } else {
            cut
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// The log of one deployment: file, ring and followers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeploymentLog {
    inner: Arc<LogInner>,
}

/// When a deployment's log file is rotated, and how many of its files are kept: with the
/// defaults, `<id>.log` up to 10 MB, then `<id>.log.1` and `<id>.log.2` before it (30 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 << 20,
            files: 3,
        }
    }
}

/// The current file of a deployment's log, rotated when it grows past its limit.
#[derive(Debug)]
struct LogFile {
    file: File,
    path: PathBuf,
    written: u64,
    rotation: Rotation,
}

impl LogFile {
    fn open(path: PathBuf, rotation: Rotation) -> io::Result<LogFile> {
        // 0600: what services print may be nobody else's business (redaction catches known
        // secrets only).
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            file,
            path,
            written,
            rotation,
        })
    }

    fn write_line(&mut self, stored: &str) -> io::Result<()> {
        writeln!(self.file, "{stored}")?;
        self.written += stored.len() as u64 + 1;
        if self.written >= self.rotation.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// `<id>.log` becomes `<id>.log.1`, each older one moves one number up, and the one past
    /// the limit goes.
    fn rotate(&mut self) -> io::Result<()> {
        let kept = self.rotation.files.max(1);
        let numbered = |n: usize| rotated_path(&self.path, n);
        if kept == 1 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..kept - 1).rev() {
                match fs::rename(numbered(n), numbered(n + 1)) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                    _ => {}
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        *self = LogFile::open(self.path.clone(), self.rotation)?;
        Ok(())
    }
}

/// `<id>.log.<n>`: the n-th file before the current one.
fn rotated_path(current: &Path, n: usize) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[derive(Debug)]
struct LogInner {
    file: Mutex<Option<LogFile>>,
    recent: Mutex<VecDeque<LogLine>>,
    followers: broadcast::Sender<LogLine>,
    terminal: Option<Style>,
    redactor: Redactor,
}

impl DeploymentLog {
    /// Opens (appends to) the deployment's log file. `terminal` is the prefix style when lines
    /// should also be printed on stdout.
    pub fn open(
        logs_dir: &Path,
        deployment_id: &str,
        terminal: Option<Style>,
        redactor: Redactor,
        rotation: Rotation,
    ) -> io::Result<Self> {
        crate::state::create_private_dir(logs_dir)?;
        let file = LogFile::open(log_path(logs_dir, deployment_id), rotation)?;
        let (followers, _) = broadcast::channel(256);
        Ok(DeploymentLog {
            inner: Arc::new(LogInner {
                file: Mutex::new(Some(file)),
                recent: Mutex::new(VecDeque::with_capacity(64)),
                followers,
                terminal,
                redactor,
            }),
        })
    }

    /// Records one line from `source` (`writer.0`).
    pub fn push(&self, source: &str, text: &str) {
        let line = LogLine {
            time_ms: now_ms(),
            source: source.to_string(),
            text: self.inner.redactor.redact(text),
        };
        if let Some(style) = &self.inner.terminal {
            // Not println!: a closed stdout (`stack up | head`) must not bring the stack down.
            let _ = writeln!(
                io::stdout().lock(),
                "{} {}",
                style.apply_to(format!("{source} |")),
                line.text
            );
        }
        {
            let mut file = self
                .inner
                .file
                .lock()
                .expect("log file lock is never poisoned");
            if let Some(open) = file.as_mut() {
                if let Err(error) = open.write_line(&line.to_stored()) {
                    tracing::warn!(%error, "cannot write the log file; lines go to the terminal only");
                    *file = None;
                }
            }
        }
        {
            let mut recent = self
                .inner
                .recent
                .lock()
                .expect("log ring lock is never poisoned");
            if recent.len() == RING_LINES {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        // No follower is the usual case; the error only says so.
        let _ = self.inner.followers.send(line);
    }

    /// The last `n` lines, oldest first, optionally only those of one source.
    pub fn recent(&self, n: usize, source: Option<&str>) -> Vec<LogLine> {
        let recent = self
            .inner
            .recent
            .lock()
            .expect("log ring lock is never poisoned");
        let mut lines: Vec<LogLine> = recent
            .iter()
            .rev()
            .filter(|line| source.is_none_or(|wanted| line.source == wanted))
            .take(n)
            .cloned()
            .collect();
        lines.reverse();
        lines
    }

    /// New lines from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.inner.followers.subscribe()
    }

    /// Reads `reader` line by line into the log until it ends (the process closed it).
    pub async fn pump(self, source: String, reader: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(reader);
        let mut buffer = Vec::new();
        // What a cut line held back, so a secret is never split across two lines.
        let mut carried = Vec::new();
        loop {
            buffer.clear();
            buffer.append(&mut carried);
            // A line is cut at MAX_LINE bytes, so output without newlines cannot grow memory.
            match (&mut lines)
                .take(MAX_LINE)
                .read_until(b'\n', &mut buffer)
                .await
            {
                Ok(0) if buffer.is_empty() => break,
                Ok(read) => {
                    if read > 0 && !buffer.ends_with(b"\n") {
                        let cut = self.inner.redactor.safe_cut(&buffer);
                        carried = buffer.split_off(cut);
                    }
                    let text = String::from_utf8_lossy(&buffer);
                    self.push(&source, text.trim_end_matches(['\n', '\r']));
                }
                Err(error) => {
                    tracing::debug!(%error, source, "output stream ended");
                    break;
                }
            }
        }
    }
}

/// The last `n` lines stored on disk for a deployment, of those from `since_ms` (milliseconds
/// since the Unix epoch) on.
pub fn read_stored(
    logs_dir: &Path,
    deployment_id: &str,
    n: usize,
    since_ms: u64,
    instance: Option<usize>,
) -> io::Result<Vec<LogLine>> {
    let current = log_path(logs_dir, deployment_id);
    let mut lines = Vec::new();
    // Newest file first, each read backwards, until enough lines or older than `since_ms`.
    for path in std::iter::once(current.clone()).chain((1..).map(|k| rotated_path(&current, k))) {
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) => return Err(error),
        };
        let mut older_than_wanted = false;
        let of_instance = text
            .lines()
            .rev()
            .filter_map(LogLine::from_stored)
            .filter(|line| line.is_of(instance));
        for line in of_instance {
            if lines.len() == n {
                break;
            }
            if line.time_ms < since_ms {
                older_than_wanted = true;
                break;
            }
            lines.push(line);
        }
        if lines.len() == n || older_than_wanted {
            break;
        }
    }
    lines.reverse();
    Ok(lines)
}

/// Whether any stored file of `deployment_id` holds a line of instance `number`.
pub fn has_lines_of(logs_dir: &Path, deployment_id: &str, number: usize) -> bool {
    read_stored(logs_dir, deployment_id, 1, 0, Some(number)).is_ok_and(|lines| !lines.is_empty())
}

/// A prefix colour per service, stable across runs; `None` when colour is off
/// (not a terminal, or `NO_COLOR` set).
pub fn prefix_style(service: &str) -> Style {
    const COLOURS: [u8; 6] = [6, 5, 3, 2, 4, 1];
    let index = service
        .bytes()
        .fold(0usize, |hash, byte| hash * 31 + usize::from(byte));
    let style = Style::new().color256(COLOURS[index % COLOURS.len()]);
    if colours_on() {
        style.force_styling(true)
    } else {
        style.force_styling(false)
    }
}

fn colours_on() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        && console::Term::stdout().is_term()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_stored_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let redactor = Redactor::new(["canary-secret-value".to_string(), "ab".to_string()]);
        let log = DeploymentLog::open(
            dir.path(),
            "writer-abcdefghij",
            None,
            redactor,
            Rotation::default(),
        )
        .unwrap();
        log.push("writer.0", "secret is canary-secret-value!");
        log.push("writer.1", "ab stays");
        let stored = read_stored(dir.path(), "writer-abcdefghij", 10, 0, None).unwrap();
        let texts: Vec<&str> = stored.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(texts, ["secret is ***!", "ab stays"]);
        let since = stored[1].time_ms + 1;
        assert!(
            read_stored(dir.path(), "writer-abcdefghij", 10, since, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(log.recent(5, Some("writer.1")).len(), 1);
        let file = fs::read_to_string(log_path(dir.path(), "writer-abcdefghij")).unwrap();
        assert!(!file.contains("canary"));
    }

    #[tokio::test]
    async fn a_secret_is_masked_where_a_long_line_is_cut() {
        let secret = "canary-secret-value-0123456789";
        for padding in [
            65_526,
            MAX_LINE as usize - 10,
            MAX_LINE as usize - secret.len(),
            10,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let redactor = Redactor::new([secret.to_string(), "other-secret".to_string()]);
            let log = DeploymentLog::open(
                dir.path(),
                "web-abcdefghij",
                None,
                redactor,
                Rotation::default(),
            )
            .unwrap();
            let output = format!("{}{secret} and é after\n", "x".repeat(padding));
            log.clone().pump("web.0".into(), output.as_bytes()).await;
            let stored = read_stored(dir.path(), "web-abcdefghij", 10, 0, None).unwrap();
            let joined: String = stored.iter().map(|line| line.text.as_str()).collect();
            assert_eq!(joined, format!("{}*** and é after", "x".repeat(padding)));
            for line in &stored {
                assert!(line.text.len() <= MAX_LINE as usize, "{}", line.text.len());
                for half in [&secret[..15], &secret[15..]] {
                    assert!(
                        !line.text.contains(half),
                        "padding {padding}: half a secret"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cut_never_splits_a_secret_or_a_character() {
        let redactor = Redactor::new(["0123456789".to_string()]);
        let cut = |text: &str| redactor.safe_cut(text.as_bytes());
        assert_eq!(
            cut("aaaaaaaaaaaaaaaaaaaa"),
            11,
            "the last 9 bytes may start a secret"
        );
        assert_eq!(
            cut("aaaaaaaaaaaa0123456789"),
            12,
            "a whole secret moves with the rest"
        );
        let accented = format!("{}é{}", "a".repeat(11), "a".repeat(8));
        assert_eq!(cut(&accented), 11, "never inside a character");
        assert_eq!(Redactor::default().safe_cut(b"abc"), 3);
    }

    #[test]
    fn a_log_rotates_at_its_size_keeps_its_files_and_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 4096,
            files: 3,
        };
        let log = DeploymentLog::open(
            dir.path(),
            "web-abcdefghij",
            None,
            Redactor::default(),
            rotation,
        )
        .unwrap();
        for n in 0..1000 {
            log.push("web.0", &format!("line {n:04} {}", "x".repeat(40)));
        }
        let current = log_path(dir.path(), "web-abcdefghij");
        let sizes: Vec<u64> = [
            current.clone(),
            rotated_path(&current, 1),
            rotated_path(&current, 2),
        ]
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .collect();
        assert!(sizes.iter().all(|size| *size <= 4096 + 80), "{sizes:?}");
        assert!(!rotated_path(&current, 3).exists(), "only 3 files are kept");
        // The last 100 lines span the current file and the ones before it, in order.
        let last = read_stored(dir.path(), "web-abcdefghij", 100, 0, None).unwrap();
        let numbers: Vec<usize> = last
            .iter()
            .map(|line| line.text[5..9].parse().unwrap())
            .collect();
        assert_eq!(numbers, (900..1000).collect::<Vec<_>>());
        let all = read_stored(dir.path(), "web-abcdefghij", usize::MAX, 0, None).unwrap();
        assert!(all.len() > 100 && all.len() < 1000, "{}", all.len());
        assert_eq!(
            all.last().unwrap().text[5..9].parse::<usize>().unwrap(),
            999
        );
    }
}
