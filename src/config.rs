//! Command line, environment and config file, merged in that order of precedence.
//!
//! Every flag of a subcommand can also be set by `DANMAKU_<FLAG>` and by a key of the TOML file given with
//! `--config` (the flag's name with `_` or `-`). The file's values become the flags' defaults, which is what makes
//! the command line and the environment win over it without a second copy of each setting.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "danmaku",
    version,
    about = "Live-stream bullet comments: batched WebSocket push at scale"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process: viewer WebSocket, HTTP API, in-process bus and history.
    Serve(ServeArgs),
    /// Cluster role: hold viewers' WebSockets, following the rooms they watch on NATS.
    Gateway(GatewayNodeArgs),
    /// Cluster role: the HTTP API and the comments gateways forward, numbered and stored in JetStream.
    Logic(LogicNodeArgs),
    /// Print a signed token (JWT, HS256) for a server started with the same --auth-secret.
    Token(TokenArgs),
    /// Load a server: viewers over rooms, comments at a steady rate; reports loss, latency, CPU and memory.
    Bench(Box<crate::bench::BenchArgs>),
    /// A worker process of `danmaku bench`, started by it.
    #[command(name = "bench-worker", hide = true)]
    BenchWorker(crate::bench::WorkerArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file whose keys set any of these flags.
    #[arg(long, env = "DANMAKU_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on (viewer WebSocket, HTTP API, /healthz, /metrics).
    #[arg(long, env = "DANMAKU_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub logic: LogicArgs,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Seconds given to viewers to take their close frame on shutdown before the process exits.
    #[arg(long, env = "DANMAKU_SHUTDOWN_TIMEOUT_SECS", default_value_t = 5)]
    pub shutdown_timeout_secs: u64,
}

/// How a cluster node reaches NATS.
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated; nats-server must run with JetStream (-js).
    #[arg(long, env = "DANMAKU_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,

    /// How often a gateway reports its viewers per room, in milliseconds; a count not renewed within three
    /// periods (a dead gateway's) stops counting.
    #[arg(long, env = "DANMAKU_PRESENCE_INTERVAL_MS", default_value_t = 1000)]
    pub presence_interval_ms: u64,
}

impl NatsArgs {
    pub fn presence_interval(&self) -> Duration {
        Duration::from_millis(self.presence_interval_ms.max(10))
    }
}

/// `danmaku gateway`: viewers' WebSockets, rooms followed on NATS, sends forwarded to the logic nodes.
#[derive(Args, Debug, Clone)]
pub struct GatewayNodeArgs {
    /// TOML file whose keys set any of these flags.
    #[arg(long, env = "DANMAKU_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on (viewer WebSocket, /healthz, /metrics). Gateways on one machine may share it: the
    /// socket is bound with SO_REUSEPORT and the kernel spreads connections over them.
    #[arg(long, env = "DANMAKU_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Comments kept per room in this gateway's mirror, for recovery (as many as the logic nodes keep).
    #[arg(long, env = "DANMAKU_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Largest client WebSocket message, in bytes.
    #[arg(long, env = "DANMAKU_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Seconds a forwarded `send` waits for a logic node's answer.
    #[arg(long, env = "DANMAKU_INGEST_TIMEOUT_SECS", default_value_t = 5)]
    pub ingest_timeout_secs: u64,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Seconds given to viewers to take their close frame on shutdown before the process exits.
    #[arg(long, env = "DANMAKU_SHUTDOWN_TIMEOUT_SECS", default_value_t = 5)]
    pub shutdown_timeout_secs: u64,
}

/// `danmaku logic`: the HTTP API and the forwarded sends, over JetStream.
#[derive(Args, Debug, Clone)]
pub struct LogicNodeArgs {
    /// TOML file whose keys set any of these flags.
    #[arg(long, env = "DANMAKU_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on (HTTP API, /healthz, /metrics); bound with SO_REUSEPORT, like gateways.
    #[arg(long, env = "DANMAKU_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub logic: LogicArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Seconds given to requests under way to finish on shutdown.
    #[arg(long, env = "DANMAKU_SHUTDOWN_TIMEOUT_SECS", default_value_t = 5)]
    pub shutdown_timeout_secs: u64,
}

/// The async runtime's threads: they run the connections, the ingest, the timers and the fan-out of small rooms.
#[derive(Args, Debug, Clone, Default)]
pub struct RuntimeArgs {
    /// Threads of the async runtime. 0 = one per core on a logic node, half the cores (at least one) where
    /// viewers are held (serve, gateway): there the fan-out threads, one per core, write the large rooms' frames.
    #[arg(long, env = "DANMAKU_RUNTIME_THREADS", default_value_t = 0)]
    pub runtime_threads: usize,
}

/// The cores this process may run on: the unit of every "0 = per core" default.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Command {
    /// How many threads the server's async runtime gets (see `RuntimeArgs`); `None` for the commands that build
    /// their own runtime or none.
    pub fn runtime_threads(&self) -> Option<usize> {
        let cores = cores();
        let (asked, holds_viewers) = match self {
            Command::Serve(a) => (a.runtime.runtime_threads, true),
            Command::Gateway(a) => (a.runtime.runtime_threads, true),
            Command::Logic(a) => (a.runtime.runtime_threads, false),
            Command::Token(_) | Command::Bench(_) | Command::BenchWorker(_) => return None,
        };
        Some(match asked {
            0 if holds_viewers => (cores / 2).max(1),
            0 => cores,
            n => n,
        })
    }
}

/// Where the token secret comes from (the servers and `danmaku token` share it).
#[derive(Args, Debug, Clone, Default)]
pub struct SecretArgs {
    /// Secret that signs tokens (JWT, HS256); when set, sending a comment needs a token. Without it the server
    /// runs in an open dev mode: anyone sends as any user name.
    #[arg(long, env = "DANMAKU_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<Secret>,

    /// File holding the secret (surrounding whitespace ignored), so it stays out of the process list.
    #[arg(long, env = "DANMAKU_AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<PathBuf>,
}

/// Who may send and who may watch.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    #[command(flatten)]
    pub secret: SecretArgs,

    /// Refuse `/ws` (HTTP 401) without a valid `?token=`; needs a secret. Without it, guests may watch.
    #[arg(long, env = "DANMAKU_REQUIRE_VIEWER_TOKEN")]
    pub require_viewer_token: bool,
}

/// A secret given on the command line or in the environment: its Debug form is redacted so that printing the
/// arguments never leaks it.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `danmaku token`: a signed token for tests and small deployments.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub user: String,

    /// The display name comments are shown under (`name` claim), 1-32 characters.
    #[arg(long)]
    pub name: String,

    /// How long the token is valid: a number with an optional suffix s, m, h or d (seconds when none).
    #[arg(long, default_value = "1h")]
    pub ttl: String,

    /// Mark the token as an admin's (`admin` claim).
    #[arg(long)]
    pub admin: bool,

    #[command(flatten)]
    pub secret: SecretArgs,
}

/// The ingest side's settings.
#[derive(Args, Debug, Clone)]
pub struct LogicArgs {
    /// Comments kept per room for recovery and the history API (in a cluster: JetStream's limit per room).
    #[arg(long, env = "DANMAKU_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Rooms whose history is kept; past it, a room without viewers (least recently used of its shard) is
    /// forgotten (in a cluster: rooms whose next id a logic node remembers between comments; JetStream keeps every
    /// room).
    #[arg(long, env = "DANMAKU_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Longest comment text, in characters after trimming.
    #[arg(long, env = "DANMAKU_MAX_CHARS", default_value_t = 100)]
    pub max_chars: usize,

    /// Largest client WebSocket message and HTTP request body, in bytes.
    #[arg(long, env = "DANMAKU_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Seconds a request has to send its whole body once its head arrived; a body trickled slower is answered
    /// 408 and its connection closed.
    #[arg(long, env = "DANMAKU_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// File of words and phrases comments may not carry, one per line (`#` starts a comment line; matched without
    /// regard to ASCII case). Reloaded on SIGHUP.
    #[arg(long, env = "DANMAKU_BLOCKED_WORDS")]
    pub blocked_words: Option<PathBuf>,

    /// What a comment holding a blocked word gets: refused (`blocked_text`), or the word masked with `*`.
    #[arg(
        long,
        env = "DANMAKU_BLOCKED_WORDS_ACTION",
        value_enum,
        default_value = "block"
    )]
    pub blocked_words_action: crate::logic::words::Action,

    /// Comments one user may send per second, on average (fractions allowed); past it they are refused with
    /// `rate_limited`. The user is the token's user id; without a secret, the name it claims. 0 = no limit.
    #[arg(
        long,
        env = "DANMAKU_COMMENT_RATE_PER_USER",
        default_value_t = 0.5,
        value_parser = crate::limits::parse_rate
    )]
    pub comment_rate_per_user: f64,

    /// Comments one user may send in a row before `--comment-rate-per-user` applies (at least 1).
    #[arg(long, env = "DANMAKU_COMMENT_BURST_PER_USER", default_value_t = 5)]
    pub comment_burst_per_user: u32,

    /// Comments one IP address (an IPv6 /64) may send per second, whoever sends them; many viewers may share one
    /// address behind a NAT. 0 = no limit.
    #[arg(
        long,
        env = "DANMAKU_COMMENT_RATE_PER_IP",
        default_value_t = 20.0,
        value_parser = crate::limits::parse_rate
    )]
    pub comment_rate_per_ip: f64,

    /// Comments one IP address may send in a row before `--comment-rate-per-ip` applies (at least 1).
    #[arg(long, env = "DANMAKU_COMMENT_BURST_PER_IP", default_value_t = 100)]
    pub comment_burst_per_ip: u32,
}

/// The push side's settings.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Merge window per room, in milliseconds; 0 sends each comment at once.
    #[arg(long, env = "DANMAKU_BATCH_MS", default_value_t = 100)]
    pub batch_ms: u64,

    /// Bytes queued for one viewer beyond which it is closed as too slow (4008).
    #[arg(long, env = "DANMAKU_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub queue_bytes: usize,

    /// Seconds a viewer's socket may take nothing at all while frames wait for it before it is closed as too slow
    /// (4008), even with room left in its queue: a reader that stopped is let go early.
    #[arg(long, env = "DANMAKU_WRITE_STALL_SECS", default_value_t = 3)]
    pub write_stall_secs: u64,

    /// Kernel send buffer of each viewer socket, in bytes (0: the kernel's autotuning, up to 4 MiB each). A cap keeps
    /// viewers that stop reading from pinning kernel memory: while a few hundred such sockets fill, every send of the
    /// room costs more (docs/benchmarks.md, section 4). 64 KiB (the kernel doubles it) holds several frames of a hot
    /// room.
    #[arg(long, env = "DANMAKU_SEND_BUFFER_BYTES", default_value_t = 64 * 1024)]
    pub send_buffer_bytes: usize,

    /// Unsent bytes each viewer socket may hold beyond what its peer's window lets out (`TCP_NOTSENT_LOWAT`; 0: no
    /// cap but the send buffer). Frames past it wait in the server's queue, where they count towards the slow-viewer
    /// limits, instead of pinning kernel memory; bytes in flight are not capped by it.
    #[arg(long, env = "DANMAKU_NOTSENT_LOWAT_BYTES", default_value_t = 16 * 1024)]
    pub notsent_lowat_bytes: usize,

    /// Seconds of silence from a viewer after which the server pings it, unless its TCP stack acknowledged frames
    /// sent to it within that time (that counts as hearing from it).
    #[arg(long, env = "DANMAKU_PING_SECS", default_value_t = 25)]
    pub ping_secs: u64,

    /// Seconds without hearing from a viewer (a message, a pong, acknowledged frames) after which it is closed
    /// (4000).
    #[arg(long, env = "DANMAKU_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Seconds a connection has to send its HTTP request head.
    #[arg(long, env = "DANMAKU_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Comments a second one room's frames may carry on this gateway, sampled evenly past it (moderators' always
    /// get through; history keeps everything). 0 = no cap: what a room can show depends on its clients, which the
    /// server cannot know (see docs/security.md, Hot rooms).
    #[arg(long, env = "DANMAKU_ROOM_DELIVERY_CAP", default_value_t = 0)]
    pub room_delivery_cap: u32,

    /// Identical comments (same text, color and mode) in one frame merge into the first, which carries
    /// `"count": n` (`--merge-identical false` to send each one).
    #[arg(
        long,
        env = "DANMAKU_MERGE_IDENTICAL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub merge_identical: bool,

    /// How often a room's online count is pushed while it changes, in milliseconds.
    #[arg(long, env = "DANMAKU_ONLINE_INTERVAL_MS", default_value_t = 2000)]
    pub online_interval_ms: u64,

    /// Seconds a closing viewer has to take its close frame before the socket is dropped.
    #[arg(long, env = "DANMAKU_CLOSE_TIMEOUT_SECS", default_value_t = 5)]
    pub close_timeout_secs: u64,

    /// Viewers this process admits; past it `/ws` answers 503. 0 = the open-files limit less 256 kept for the API.
    #[arg(long, env = "DANMAKU_MAX_VIEWERS", default_value_t = 0)]
    pub max_viewers: usize,

    /// Fan-out threads, and member shards per room. A big room's frame is written by the room's home thread, or,
    /// once one frame costs more than half the batch window of CPU, shard i by thread i. 0 = one per core.
    #[arg(long, env = "DANMAKU_FANOUT_SHARDS", default_value_t = 0)]
    pub fanout_shards: usize,

    /// Web origins (scheme://host[:port], comma separated) whose pages may open viewer WebSockets, besides the
    /// server's own origin, which always may; `*` admits any page. Clients that send no Origin (not browsers) are
    /// not concerned.
    #[arg(long, env = "DANMAKU_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Viewer WebSockets one IP address (an IPv6 /64) may hold at once; past it `/ws` answers 429. Many viewers
    /// may share one address behind a NAT. 0 = no limit.
    #[arg(long, env = "DANMAKU_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: usize,

    /// Viewer WebSockets one IP address may open per second, on average (fractions allowed); past it `/ws`
    /// answers 429. 0 = no limit.
    #[arg(
        long,
        env = "DANMAKU_NEW_CONNECTIONS_PER_IP",
        default_value_t = 20.0,
        value_parser = crate::limits::parse_rate
    )]
    pub new_connections_per_ip: f64,

    /// Viewer WebSockets one IP address may open in a row before `--new-connections-per-ip` applies (at least 1).
    #[arg(
        long,
        env = "DANMAKU_NEW_CONNECTIONS_BURST_PER_IP",
        default_value_t = 100
    )]
    pub new_connections_burst_per_ip: u32,
}

impl GatewayArgs {
    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_ms)
    }

    pub fn write_stall(&self) -> Duration {
        Duration::from_secs(self.write_stall_secs.max(1))
    }
}

/// Parses the process's arguments, applying `--config` (or `DANMAKU_CONFIG`) as defaults.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os().collect())
}

pub fn parse_from(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut cmd = Cli::command();
    let config =
        config_path(&args).or_else(|| std::env::var_os("DANMAKU_CONFIG").map(PathBuf::from));
    let sub = subcommand_name(&args);
    let known: Vec<String> = sub
        .as_deref()
        .and_then(|name| cmd.find_subcommand(name))
        .map(|s| s.get_arguments().map(|a| a.get_id().to_string()).collect())
        .unwrap_or_default();
    // Only subcommands with a `--config` flag read the file (so `bench` ignores a DANMAKU_CONFIG meant for a server).
    if let (Some(path), Some(sub), true) = (config, sub, known.iter().any(|k| k == "config")) {
        let table = load_table(&path)
            .map_err(|msg| cmd.error(clap::error::ErrorKind::ValueValidation, msg))?;
        let mut unknown = Vec::new();
        for (key, value) in table {
            let id = key.replace('-', "_");
            if !known.contains(&id) || id == "config" {
                unknown.push(key);
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            cmd = cmd.mut_subcommand(&sub, |s| s.mut_arg(&id, |a| a.default_value(text)));
        }
        if !unknown.is_empty() {
            return Err(cmd.error(
                clap::error::ErrorKind::UnknownArgument,
                format!("unknown key(s) in config file: {}", unknown.join(", ")),
            ));
        }
    }
    let matches: ArgMatches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    None
}

fn subcommand_name(args: &[OsString]) -> Option<String> {
    let cmd = Cli::command();
    args.iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| cmd.find_subcommand(a).is_some())
        .map(str::to_owned)
}

fn load_table(path: &PathBuf) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("config {} is not valid TOML: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn serve(cli: Cli) -> ServeArgs {
        match cli.command {
            Command::Serve(s) => s,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn file_values_are_defaults_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("danmaku-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "batch_ms = 7\nhistory = 5\nlisten = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = serve(
            parse_from(args(&["danmaku", "serve", "--config", f, "--history", "9"])).unwrap(),
        );
        assert_eq!(s.gateway.batch_ms, 7);
        assert_eq!(s.logic.history, 9);
        assert_eq!(s.listen.port(), 9);
        std::fs::write(&file, "no_such_flag = 1\n").unwrap();
        assert!(parse_from(args(&["danmaku", "serve", "--config", f])).is_err());
    }

    #[test]
    fn rate_limits_have_public_defaults_and_take_file_values() {
        let s = serve(parse_from(args(&["danmaku", "serve"])).unwrap());
        assert_eq!(
            (
                s.logic.comment_rate_per_user,
                s.logic.comment_burst_per_user
            ),
            (0.5, 5)
        );
        assert_eq!(s.gateway.max_connections_per_ip, 500);
        let dir = std::env::temp_dir().join(format!("danmaku-cfg-rl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "comment_rate_per_user = 0.25\ncomment-rate-per-ip = 3\nmax_connections_per_ip = 0\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = serve(parse_from(args(&["danmaku", "serve", "--config", f])).unwrap());
        assert_eq!(s.logic.comment_rate_per_user, 0.25);
        assert_eq!(s.logic.comment_rate_per_ip, 3.0);
        assert_eq!(s.gateway.max_connections_per_ip, 0);
        let negative = ["danmaku", "serve", "--new-connections-per-ip=-1"];
        assert!(parse_from(args(&negative)).is_err());
    }
}
