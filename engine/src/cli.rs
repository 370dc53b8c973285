//! Command-line parsing. Timely's own flags (`-w -n -p -h -r -z`, `--progress-mode`,
//! `--idle-spin`) are installed by timely itself, so `engine -w 8 -n 3 -p 1 -h hosts` means
//! exactly what it means to any timely program; the engine adds its flags beside them.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text and exit.
    Help(String),
    /// Print the version and exit.
    Version,
    /// Run the engine.
    Run(Box<RunArgs>),
}

/// Arguments of a run.
#[derive(Debug)]
pub struct RunArgs {
    /// The pipeline configuration file (TOML); defaults apply without one.
    pub config: Option<PathBuf>,
    /// Overrides `metrics.listen` of the configuration.
    pub metrics_listen: Option<SocketAddr>,
    /// Overrides `kafka.log_loss_timeout_secs` of the configuration.
    pub log_loss_timeout_secs: Option<u64>,
    /// Accept a new log in place of the one the checkpoints describe, then exit.
    pub accept_new_log: bool,
    /// Remove this tenant from every table, the engine's state and replays (through the
    /// running engine), wait until it is done, then exit.
    pub remove_tenant: Option<String>,
    /// This process's index in the cluster (`-p`), used to offset per-process ports.
    pub process_index: usize,
    /// Processes in the cluster (`-n`).
    pub processes: usize,
    /// Worker threads per process (`-w`).
    pub workers_per_process: usize,
    /// Timely's configuration, parsed by timely from its own flags.
    pub timely: timely::Config,
}

/// Why the command line was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}\n\nRun `engine --help` for usage.")]
pub struct CliError(String);

fn options() -> getopts::Options {
    let mut options = getopts::Options::new();
    timely::Config::install_options(&mut options);
    options.optopt("", "config", "pipeline configuration file (TOML)", "FILE");
    options.optopt(
        "",
        "metrics-listen",
        "address of the /metrics endpoint (default from config; the port is offset by -p)",
        "ADDR",
    );
    options.optopt(
        "",
        "log-loss-timeout-secs",
        "how long to wait, stalled, on a log that is not the one the checkpoints describe, \
         before exiting with status 4 (default from config: 300)",
        "SECS",
    );
    options.optflag(
        "",
        "accept-new-log",
        "recovery after exit status 4: partitions whose log is not the one the checkpoints \
         describe start afresh from the new log, every result kept (sessions open at the cut \
         split there); then exit. Run it once, on one process",
    );
    options.optopt(
        "",
        "remove-tenant",
        "operator command: removes the tenant from every table, the running engine's state and \
         every replay (a control record), waits until the running engine reports it done, \
         prints the rows removed per table, then exits",
        "TENANT",
    );
    options.optflag("", "help", "print this help");
    options.optflag("V", "version", "print the version");
    options
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let options = options();
    let matches = options
        .parse(args)
        .map_err(|error| CliError(error.to_string()))?;
    if matches.opt_present("help") {
        let brief = "Usage: engine [-w WORKERS] [-n PROCESSES -p INDEX -h HOSTFILE] [--config FILE]\n\n\
            Runs the clickstream dataflow. Timely's cluster flags: a single `engine -w 2` runs \
            everything in one process; `engine -w 8 -n 3 -p I -h hosts` is process I of a \
            three-process cluster whose addresses are the first three lines of `hosts`. \
            Worker `i` of all `W*N` workers reads Kafka partitions `p` with `p % (W*N) == i`.\n\
            Environment: CLICKSTREAM_ENGINE_<SECTION>__<KEY> overrides the config file, \
            e.g. CLICKSTREAM_ENGINE_KAFKA__BROKERS.";
        return Ok(Command::Help(options.usage(brief)));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version);
    }
    if !matches.free.is_empty() {
        return Err(CliError(format!(
            "unexpected arguments: {}",
            matches.free.join(" ")
        )));
    }
    let number = |flag: &str| -> Result<usize, CliError> {
        matches
            .opt_get_default(flag, if flag == "p" { 0 } else { 1 })
            .map_err(|error| CliError(format!("-{flag}: {error}")))
    };
    let metrics_listen = matches
        .opt_str("metrics-listen")
        .map(|text| {
            text.parse()
                .map_err(|error| CliError(format!("--metrics-listen {text}: {error}")))
        })
        .transpose()?;
    let log_loss_timeout_secs = matches
        .opt_get("log-loss-timeout-secs")
        .map_err(|error| CliError(format!("--log-loss-timeout-secs: {error}")))?;
    Ok(Command::Run(Box::new(RunArgs {
        config: matches.opt_str("config").map(PathBuf::from),
        metrics_listen,
        log_loss_timeout_secs,
        accept_new_log: matches.opt_present("accept-new-log"),
        remove_tenant: matches.opt_str("remove-tenant"),
        process_index: number("p")?,
        processes: number("n")?,
        workers_per_process: number("w")?,
        timely: timely::Config::from_matches(&matches).map_err(CliError)?,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn timely_flags_and_engine_flags_side_by_side() {
        let dir = std::env::temp_dir().join(format!("engine-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "127.0.0.1:3000\n127.0.0.1:3001\n127.0.0.1:3002\n").unwrap();
        let line = format!(
            "-w 8 -n 3 -p 1 -h {} --config x.toml --metrics-listen 127.0.0.1:9000 --log-loss-timeout-secs 30",
            hosts.display()
        );
        let Command::Run(run) = parse(args(&line)).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(
            (run.workers_per_process, run.processes, run.process_index),
            (8, 3, 1)
        );
        assert_eq!(run.config, Some(PathBuf::from("x.toml")));
        assert_eq!(run.metrics_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(run.log_loss_timeout_secs, Some(30));
        match run.timely {
            timely::Config {
                communication:
                    timely::CommunicationConfig::Cluster {
                        threads,
                        process,
                        addresses,
                        ..
                    },
                ..
            } => {
                assert_eq!((threads, process, addresses.len()), (8, 1, 3));
            }
            other => panic!("expected a cluster configuration, got {other:?}"),
        }
    }

    #[test]
    fn help_documents_timely_flags() {
        let Command::Help(text) = parse(args("--help")).unwrap() else {
            panic!("no help")
        };
        for flag in [
            "-w, --threads",
            "-n, --processes",
            "-p, --process",
            "-h, --hostfile",
            "--config",
        ] {
            assert!(text.contains(flag), "help lacks {flag}:\n{text}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(args("-w many")).is_err());
        assert!(parse(args("--frobnicate")).is_err());
        assert!(parse(args("stray")).is_err());
    }
}
