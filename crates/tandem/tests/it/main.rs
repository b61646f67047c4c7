//! End-to-end tests: the `tandem` binary against real git repositories and real processes.

mod actions;
mod alerting;
mod code;
mod containers;
mod deploy;
mod monitoring;
mod oidc;
mod proxy;
mod run;
mod secrets;
mod server;
mod signals;
mod validate;
mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch git repository with workflow files, and a data directory for Tandem.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub data: tempfile::TempDir,
}

impl Repo {
    pub fn new(workflows: &[(&str, &str)]) -> Repo {
        let repo = Repo { dir: tempfile::tempdir().unwrap(), data: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "dev@example.com"]);
        repo.git(&["config", "user.name", "Dev"]);
        for (name, text) in workflows {
            repo.write(&format!(".github/workflows/{name}"), text);
        }
        repo.write("README.md", "demo\n");
        repo.commit("initial");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    pub fn git(&self, args: &[&str]) {
        let status = Command::new("git").arg("-C").arg(self.path()).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command.args(args).current_dir(self.path()).env("TANDEM_DATA", self.data.path()).env_remove("TANDEM_NO_LIVE");
        command
    }

    pub fn tandem(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().unwrap();
        Run::from(output)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.all()))
    }
}

/// The job entries of a `--format json` report.
pub fn jobs(report: &serde_json::Value) -> Vec<(String, String)> {
    report["runs"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j["status"].as_str().unwrap().to_string()))
        .collect()
}

pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
