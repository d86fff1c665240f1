//! `safety-gate playground`: serves the policy playground (`crate::playground`)
//! over plain HTTP on loopback.

use crate::cli::policytest::spec::InlineSource;
use crate::documents::{files_in, read_text};
use crate::playground::{Playground, router, shipped_library};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct PlaygroundArgs {
    /// Address to listen on (plain HTTP): IP:PORT, or localhost:PORT for
    /// 127.0.0.1:PORT. Port 0 picks a free port; the URL is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:8088", value_parser = listen_address)]
    pub listen: SocketAddr,
    /// The policy library the page offers (a directory or file; default: the
    /// shipped policies, built into the binary).
    #[arg(long, value_name = "PATH")]
    pub policies: Option<PathBuf>,
    /// Listen on an address other than loopback. The page evaluates whatever
    /// is pasted into it and has no authentication: only for a trusted network.
    #[arg(long)]
    pub allow_remote: bool,
    /// How long one evaluation may run (like 10s, 500ms); a longer one is
    /// stopped and answered 503. An evaluation whose client went away is
    /// stopped at once.
    #[arg(long, default_value = "10s", value_parser = super::serve::duration)]
    pub evaluation_timeout: std::time::Duration,
}

/// `--listen`: `IP:PORT`, or `localhost:PORT` (127.0.0.1, without asking the
/// resolver, which may map `localhost` elsewhere).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Some((host, port)) = text.rsplit_once(':')
        && host.eq_ignore_ascii_case("localhost")
    {
        let port: u16 = port
            .parse()
            .map_err(|e| format!("'{port}' is not a port: {e}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|e| format!("{e}: expected IP:PORT or localhost:PORT"))
}

/// The library: every file of `path` (name relative to it), or the shipped policies.
///
/// # Errors
/// `path` does not exist or a file in it cannot be read.
fn library(path: Option<&Path>) -> anyhow::Result<Vec<InlineSource>> {
    let Some(path) = path else {
        return Ok(shipped_library());
    };
    if !path.exists() {
        bail!("{}", super::missing_policies(path));
    }
    let files = if path.is_dir() {
        files_in(path).with_context(|| format!("{}: cannot read", path.display()))?
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let text = read_text(&file).with_context(|| format!("{}: cannot read", file.display()))?;
        let name = file
            .strip_prefix(path)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(&file)
            .display()
            .to_string();
        out.push(InlineSource { name, text });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Runs the playground until SIGTERM or Ctrl-C.
///
/// # Errors
/// A non-loopback `--listen` without `--allow-remote`, a library that cannot
/// be read, an address that cannot be bound.
pub fn run_blocking(args: PlaygroundArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--listen {}: not a loopback address; the playground evaluates whatever is pasted into it and has no authentication (pass --allow-remote to listen there anyway)",
            args.listen
        );
    }
    let library = library(args.policies.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("safety-gate-playground")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("no local address")?;
        // Against DNS rebinding, a loopback playground answers only requests
        // addressed to itself; --allow-remote accepts any name.
        let allowed_hosts = (!args.allow_remote)
            .then(|| Arc::new(crate::playground::guard::loopback_hosts(address)));
        let app = router(Playground {
            library: Arc::new(library),
            allowed_hosts,
            evaluation_timeout: args.evaluation_timeout,
        });
        println!("playground: http://{address}/");
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped())
            .await
            .context("the playground server failed")
    })
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
