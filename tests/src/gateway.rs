//! Runs the real `aiclient` binary: [`Gateway::start`] spawns it with `--port 0`, waits for the
//! "listening on" line, and kills the process when dropped. [`http`] is a minimal HTTP/1.1
//! client over a real loopback socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the process wrote to stderr so far is forwarded here, line by line.
    pub stderr: mpsc::Receiver<String>,
    /// Its stdout lines up to and including the "listening on" line.
    pub stdout: Vec<String>,
}

/// The `aiclient` command with the test plugin dir and a clean logging environment.
pub fn command(args: &[&str]) -> Command {
    command_with(crate::artifacts::get(), args)
}

/// [`command`] with an explicit set of built artifacts.
pub fn command_with(a: &crate::artifacts::Artifacts, args: &[&str]) -> Command {
    let mut cmd = Command::new(a.bin("aiclient"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("AICLIENT_CONFIG")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_ENABLED")
        // Provider plugins fall back to these; tests set what they need per account.
        .env_remove("GEMINI_OAUTH_CLIENT_ID")
        .env_remove("GEMINI_OAUTH_CLIENT_SECRET")
        .env_remove("IFLOW_OAUTH_CLIENT_ID")
        .env_remove("IFLOW_OAUTH_CLIENT_SECRET")
        .env_remove("QWEN_OAUTH_CLIENT_ID")
        .env("AICLIENT_PLUGIN_DIR", a.plugin_dir())
        .env("NO_COLOR", "1");
    cmd
}

impl Gateway {
    /// Starts `aiclient serve --port 0 <args>` in `cwd` and waits (up to 30 s) until it listens.
    pub fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Self::start_with(crate::artifacts::get(), cwd, args, env)
    }

    /// [`Gateway::start`] with an explicit set of built artifacts (a test that built only the
    /// packages it needs with [`crate::artifacts::build`]).
    pub fn start_with(
        artifacts: &crate::artifacts::Artifacts,
        cwd: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let mut full = vec!["serve", "--host", "127.0.0.1", "--port", "0"];
        full.extend_from_slice(args);
        let mut cmd = command_with(artifacts, &full);
        cmd.current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aiclient");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.push(line.clone());
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((addr, std::mem::take(&mut seen)));
                }
            }
        });
        let (addr, stdout) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((a, lines)) => (a.parse().expect("listen address parses"), lines),
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "aiclient did not start listening; stderr:\n{}",
                    log.join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            stderr: err_rx,
            stdout,
        }
    }

    /// What the process logged (stderr) since the last call. Waits until no new line has come
    /// for 150 ms (at most 2 s), since a line written just before a response may still be in
    /// the pipe.
    pub fn logs(&self) -> String {
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(150)) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        lines.join("\n")
    }

    /// The admin password the gateway generated and printed at its first start, if it did.
    pub fn generated_password(&self) -> Option<String> {
        self.stdout.iter().find_map(|l| {
            l.split("admin password (shown once, stored hashed): ")
                .nth(1)
                .map(|p| p.trim().to_string())
        })
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path, &[], "")
    }

    /// Sends SIGTERM, waits for the exit, and returns everything the process logged (stderr).
    pub fn terminate_keep_logs(mut self) -> Vec<String> {
        let rx = std::mem::replace(&mut self.stderr, mpsc::channel().1);
        let st = self.terminate();
        assert!(st.success(), "exit status after SIGTERM: {st:?}");
        let mut lines = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            lines.push(l);
        }
        lines
    }

    /// Sends SIGTERM and waits (up to 15 s) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.stop()
    }

    /// [`Gateway::terminate`] through a borrow (for a gateway kept inside a test's fixture).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        for _ in 0..150 {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("aiclient did not exit within 15 s of SIGTERM");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh loopback connection; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to gateway");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
