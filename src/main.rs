//! Parse the command line, start logging, run the command, exit with its code.

use std::io::Write;

use argh::FromArgs;
use metricsctl::build_info;
use metricsctl::cli::{Cli, Command, KpisCommand};
use metricsctl::commands::{self, CommandError};
use metricsctl::redact;

/// Exit code for a setting that cannot be valid (and for a command line argh cannot parse).
const EXIT_BAD_SETTING: i32 = 2;
const EXIT_FAILED: i32 = 1;

fn main() {
    let cli = parse_command_line();
    init_logging();
    let result = match cli.command {
        Command::Produce(args) => commands::produce::run(&args),
        Command::Consume(args) => commands::consume::run(&args),
        Command::Kpis(kpis) => match kpis.command {
            KpisCommand::Show(args) => commands::kpis::show(&args),
            KpisCommand::Plot(args) => commands::kpis::plot(&args),
        },
        Command::Status(args) => commands::status::run(&args),
    };
    let code = match result {
        Ok(()) => 0,
        Err(CommandError::Setting(e)) => {
            eprintln!("error: {}", redact::scrub(&e.to_string()));
            EXIT_BAD_SETTING
        }
        Err(CommandError::Failed(message)) => {
            eprintln!("error: {}", redact::scrub(&message));
            EXIT_FAILED
        }
        // Already reported on stdout: the exit code is the answer.
        Err(CommandError::Unhealthy) => EXIT_FAILED,
        // A stop request is a normal end: everything completed is stored and committed.
        Err(CommandError::Stopped) => 0,
    };
    std::process::exit(code);
}

/// Like `argh::from_env`, but a command line that cannot be parsed exits with code 2, as every
/// other wrong setting does, and `--version` / `-V` print the build and exit 0: argh has no
/// version flag, and a top-level switch would make it ask for a subcommand all the same.
fn parse_command_line() -> Cli {
    let args: Vec<String> = std::env::args().collect();
    if matches!(args.get(1).map(String::as_str), Some("--version" | "-V")) {
        println!("{}", build_info::version_line());
        std::process::exit(0);
    }
    let command = args
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("metricsctl")
        .to_string();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match Cli::from_args(&[&command], &rest) {
        Ok(cli) => cli,
        Err(early) => match early.status {
            Ok(()) => {
                println!("{}", early.output);
                std::process::exit(0);
            }
            Err(()) => {
                // argh may spread one message over lines ("Required options not provided:"
                // then the options): one line, as every other error.
                let message = early
                    .output
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let message = if message.is_empty() {
                    "invalid command line".to_string()
                } else {
                    message
                };
                eprintln!("error: {message}; see `{command} --help`");
                std::process::exit(EXIT_BAD_SETTING);
            }
        },
    }
}

/// `info` by default, `RUST_LOG` overrides; every line passes through the secret scrubber.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp_millis(),
                record.level(),
                redact::scrub(&record.args().to_string())
            )
        })
        .init();
}
