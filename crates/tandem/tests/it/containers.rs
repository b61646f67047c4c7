//! Container jobs and service containers on a real Docker engine. Images are built here from a
//! busybox-static root filesystem (`docker import`), since no registry is reachable.

use std::process::Command;
use std::sync::OnceLock;

use crate::Repo;

/// Builds the test images once: `tandem-test/busybox` (a shell) and `tandem-test/web` (an HTTP
/// server serving /www). Panics, saying what to do, when no engine answers: these tests never skip.
pub(crate) fn images() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let engine = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
        if !engine.is_ok_and(|o| o.status.success()) {
            return Err("no Docker engine answers".into());
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("busybox-static is not installed")?;
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.path().join("bin")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.path().join("tmp")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.path().join("www")).map_err(|e| e.to_string())?;
        std::fs::write(root.path().join("www/index.html"), "hello from the web service\n")
            .map_err(|e| e.to_string())?;
        std::fs::copy(busybox, root.path().join("bin/busybox")).map_err(|e| e.to_string())?;
        let applets = Command::new(busybox).arg("--list").output().map_err(|e| e.to_string())?;
        for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet));
        }
        for (tag, changes) in [
            ("tandem-test/busybox:1", vec!["ENV PATH=/bin"]),
            ("tandem-test/web:1", vec!["ENV PATH=/bin", r#"CMD ["httpd","-f","-p","80","-h","/www"]"#]),
        ] {
            let mut command = Command::new("sh");
            let changes: String = changes.iter().map(|c| format!(" -c '{c}'")).collect();
            command.arg("-c").arg(format!("tar -C {} -c . | docker import{changes} - {tag}", root.path().display()));
            let output = command.output().map_err(|e| e.to_string())?;
            if !output.status.success() {
                return Err(format!("docker import failed: {}", String::from_utf8_lossy(&output.stderr)));
            }
        }
        Ok(())
    });
    if let Err(why) = ready {
        panic!(
            "the container tests need a Docker engine: {why}\n`cargo xtask test` installs docker.io and starts dockerd"
        );
    }
}

/// Job ids unique to this test process (`ctr-x` → `ctr<pid>-x`), so that suites sharing one
/// engine never see each other's containers.
fn unique(text: &str) -> String {
    text.replace("ctr-", &format!("ctr{}-", std::process::id()))
}

/// Names of containers and networks Tandem created for jobs whose name contains `marker`.
fn leftovers(marker: &str) -> Vec<String> {
    let containers = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=dev.tandem.owner", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    let networks = Command::new("docker")
        .args(["network", "ls", "--filter", "label=dev.tandem.owner", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&containers.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&networks.stdout).lines())
        .map(str::to_string)
        .collect();
    names.retain(|n| n.contains(marker));
    names
}

#[test]
fn container_jobs_run_steps_in_the_image_with_healthy_services() {
    images();
    let wf = r#"
on: push
jobs:
  ctr-happy:
    runs-on: ubuntu-latest
    container:
      image: tandem-test/busybox:1
      env:
        FROM_CONTAINER: set
      options: --memory 64m --cpus 1
    services:
      web:
        image: tandem-test/web:1
        options: --health-cmd "wget -q -O- http://127.0.0.1:80/index.html" --health-interval 250ms --health-retries 40
    steps:
      - uses: actions/checkout@v4
      - run: test ! -e /usr/bin/git && echo "busybox only; FROM_CONTAINER=$FROM_CONTAINER; file=$(cat data.txt)"
      - run: wget -q -O- http://web:80/index.html
      - id: out
        run: echo "answer=42" >> "$GITHUB_OUTPUT"; echo made > from-container.txt
      - run: echo "output ${{ steps.out.outputs.answer }} on ${{ github.ref_name }}"
"#;
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    repo.write("data.txt", "checked-out\n");
    repo.commit("data");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for expected in
        ["busybox only; FROM_CONTAINER=set; file=checked-out", "hello from the web service", "output 42 on main"]
    {
        assert!(run.stdout.contains(expected), "missing {expected:?} in\n{}", run.stdout);
    }
    assert!(leftovers(&unique("ctr-happy")).is_empty(), "left behind: {:?}", leftovers(&unique("ctr-happy")));
}

#[test]
fn an_unhealthy_service_fails_the_job_with_its_last_log_lines() {
    images();
    let wf = r#"
on: push
jobs:
  ctr-sick:
    runs-on: ubuntu-latest
    container: tandem-test/busybox:1
    services:
      db:
        image: tandem-test/web:1
        options: --health-cmd "echo probing the database; exit 1" --health-interval 200ms --health-retries 2
    steps:
      - run: echo "must not run"
"#;
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("service `db` is unhealthy"), "{}", run.stdout);
    assert!(!run.stdout.contains("| must not run"), "{}", run.stdout);
    assert!(leftovers(&unique("ctr-sick")).is_empty(), "left behind: {:?}", leftovers(&unique("ctr-sick")));
}

#[test]
fn missing_images_and_timeouts_are_reported_as_such() {
    images();
    let wf = r#"
on: push
jobs:
  ctr-missing:
    runs-on: ubuntu-latest
    container: tandem-test/not-there:9
    steps:
      - run: echo hi
  ctr-slow:
    runs-on: ubuntu-latest
    container: tandem-test/busybox:1
    steps:
      - timeout-minutes: 0.02
        run: sleep 120
      - if: always()
        run: echo "cleanup still runs in the container"
"#;
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    let started = std::time::Instant::now();
    let run = repo.tandem(&["run", "--format", "json"]);
    assert!(started.elapsed().as_secs() < 60, "the timeout did not stop the step");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("image `tandem-test/not-there:9` is not present and cannot be pulled"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("timed out after") && run.stderr.contains("cleanup still runs in the container"),
        "{}",
        run.stderr
    );
    let statuses = crate::jobs(&run.json());
    assert_eq!(statuses, [(unique("ctr-missing"), "failure".into()), (unique("ctr-slow"), "failure".into())]);
    assert!(
        leftovers(&unique("ctr-")).iter().all(|n| !n.contains("ctr-missing") && !n.contains("ctr-slow")),
        "{:?}",
        leftovers(&unique("ctr-"))
    );
}

#[test]
fn leftovers_of_a_dead_tandem_are_reaped() {
    images();
    // A container as a crashed Tandem (pid 999999, which does not exist) would have left it.
    let stale = Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            "dev.tandem.owner=999999",
            "--name",
            &unique("tandem-stale-ctr-reap"),
            "tandem-test/busybox:1",
            "sleep",
            "300",
        ])
        .output()
        .unwrap();
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));
    let wf = "on: push\njobs:\n  ctr-reaper:\n    runs-on: ubuntu-latest\n    container: tandem-test/busybox:1\n    steps:\n      - run: echo ok\n";
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(leftovers(&unique("tandem-stale-ctr-reap")).is_empty(), "the stale container survived");
}

#[test]
fn docker_image_steps_see_the_workspace_and_write_outputs() {
    images();
    let wf = r#"
on: push
jobs:
  ctr-image-step:
    runs-on: ubuntu-latest
    services:
      web:
        image: tandem-test/web:1
    steps:
      - uses: actions/checkout@v4
      - id: img
        uses: docker://tandem-test/busybox:1
        with:
          args: sh -c "echo from the image; cat data.txt; wget -q -O- http://web:80/index.html; echo value=7 >> $GITHUB_OUTPUT"
      - uses: docker://tandem-test/busybox:1
        with:
          entrypoint: echo
          args: entrypoint replaced, value ${{ steps.img.outputs.value }}
      - uses: docker://tandem-test/busybox:1
        continue-on-error: true
        with:
          args: sh -c "exit 3"
"#;
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    repo.write("data.txt", "workspace file\n");
    repo.commit("data");
    let run = repo.tandem(&["run", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for expected in [
        "from the image",
        "workspace file",
        "hello from the web service",
        "entrypoint replaced, value 7",
        "exited with code 3",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?} in\n{}", run.stderr);
    }
    let steps = &run.json()["runs"][0]["jobs"][0]["steps"];
    assert_eq!(steps[3]["outcome"], "failure");
    assert!(leftovers(&unique("ctr-image-step")).is_empty(), "{:?}", leftovers(&unique("ctr-image-step")));
}

/// Debian's `docker-registry` on a free loopback port, stopped when dropped.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_get(addr: &str, path: &str, accept: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn registry() -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed");
    let addr = format!("127.0.0.1:{port}");
    // Dropping the guard kills the registry, also when it never answers.
    let registry = Registry { child, addr: addr.clone(), _dir: dir };
    for _ in 0..100 {
        if raw_get(&addr, "/v2/", "*/*").starts_with("HTTP/1.1 200") {
            return registry;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(registry);
    panic!("the registry did not start on {addr}");
}

#[test]
fn images_are_built_tagged_with_the_commit_pushed_and_recorded() {
    images();
    let registry = registry();
    let wf = format!(
        r#"
on: push
jobs:
  ctr-build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: build
        uses: docker/build-push-action@v6
        with:
          context: app
          tags: {addr}/tandem-test/app:latest
          push: true
          build-args: GREETING=built by tandem
      - run: echo "digest=${{{{ steps.build.outputs.digest }}}} id=${{{{ steps.build.outputs.imageid }}}}"
      - uses: docker://{addr}/tandem-test/app:latest
"#,
        addr = registry.addr
    );
    let repo = Repo::new(&[("ci.yml", &unique(&wf))]);
    repo.write("app/Dockerfile", "FROM tandem-test/busybox:1\nARG GREETING\nCOPY . /ctx\nRUN test ! -e /ctx/secret.txt && echo \"$GREETING\" > /greeting\nRUN mkdir -p /var/lib/dpkg && cp /ctx/dpkg-status /var/lib/dpkg/status\nCMD [\"cat\", \"/greeting\"]\n");
    // A package database as Debian keeps it, for the SBOM to find in the image's layers.
    repo.write("app/dpkg-status", "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n");
    repo.write("app/secret.txt", "never in the image\n");
    repo.write("app/requirements.txt", "flask==2.3.2\nrequests==2.31.0\n");
    repo.write("app/ignored/requirements.txt", "left-out==1.0\n");
    repo.write("app/.dockerignore", "secret.txt\nignored\n");
    repo.commit("app");
    let sha = {
        let out = Command::new("git").arg("-C").arg(repo.path()).args(["rev-parse", "HEAD"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let digest = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(unique("[ctr-build] | digest=").as_str()))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "no digest in\n{}", run.stdout);
    assert!(run.stdout.contains("| built by tandem"), "the pushed image did not run:\n{}", run.stdout);
    // The registry holds the commit tag with the same manifest digest.
    let manifest = raw_get(
        &registry.addr,
        &format!("/v2/tandem-test/app/manifests/{}", &sha[..12]),
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    assert!(manifest.starts_with("HTTP/1.1 200"), "{manifest}");
    assert!(manifest.to_ascii_lowercase().contains(&format!("docker-content-digest: {digest}")), "{manifest}");
    // And the run recorded it as an artifact.
    let artifacts = run.stdout.lines().find_map(|l| l.strip_prefix("artifacts: ")).unwrap_or_default();
    let dir = artifacts.split(" in ").nth(1).unwrap_or_default().trim();
    let record = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("image-"))
        .unwrap()
        .path()
        .join("image.json");
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    assert_eq!(record["digest"], digest.as_str());
    // Its SBOM lists the packages of the lock files the context gave it (not those it ignores).
    let sbom = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sbom-"))
        .expect("an SBOM artifact")
        .path()
        .join("sbom.cdx.json");
    let sbom: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sbom).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["type"], "container", "{sbom:#}");
    assert_eq!(sbom["metadata"]["component"]["version"], &sha[..12], "{sbom:#}");
    let purls: Vec<&str> = sbom["components"].as_array().unwrap().iter().map(|c| c["purl"].as_str().unwrap()).collect();
    assert_eq!(
        purls,
        ["pkg:deb/debian/libc6@2.36-9", "pkg:pypi/flask@2.3.2", "pkg:pypi/requests@2.31.0"],
        "its layers: the package database and the lock file it copied (not the one .dockerignore left out): {sbom:#}"
    );
    assert!(record["tags"].as_array().unwrap().iter().any(|t| t.as_str().unwrap().ends_with(&sha[..12])), "{record}");
    let content_tag = format!(":sha256-{}", &record["id"].as_str().unwrap().trim_start_matches("sha256:")[..12]);
    assert!(record["tags"].as_array().unwrap().iter().any(|t| t.as_str().unwrap().ends_with(&content_tag)), "{record}");
    let by_content = raw_get(
        &registry.addr,
        &format!("/v2/tandem-test/app/manifests/{}", content_tag.trim_start_matches(':')),
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    assert!(by_content.starts_with("HTTP/1.1 200"), "{by_content}");
}

#[test]
fn runs_on_labels_mapped_to_an_image_run_in_it() {
    images();
    let wf = "on: push\njobs:\n  ctr-mapped:\n    runs-on: ubuntu-22.04\n    steps:\n      - run: test ! -e /usr/bin/git && echo in-the-image\n  ctr-host:\n    runs-on: self-hosted\n    steps:\n      - run: test -e /usr/bin/git -o -e /usr/local/bin/git && echo on-the-host\n";
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    let run = repo.tandem(&["run", "-P", "ubuntu-22.04=tandem-test/busybox:1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&unique("[ctr-mapped] | in-the-image"))
            && run.stdout.contains(&unique("[ctr-host] | on-the-host")),
        "{}",
        run.stdout
    );
    let bad = repo.tandem(&["run", "-P", "no-equals-sign"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--platform `no-equals-sign` must be NAME=VALUE"), "{}", bad.stderr);
}

#[test]
fn an_engine_that_does_not_answer_is_named_and_local_jobs_still_run() {
    let wf = "on: push\njobs:\n  needs-docker:\n    runs-on: ubuntu-latest\n    container: tandem-test/busybox:1\n    steps:\n      - run: echo never\n  local:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo local-ran\n";
    let repo = Repo::new(&[("ci.yml", &unique(wf))]);
    let output = repo
        .command(&["run", "--format", "json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let run = crate::Run::from(output);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("local-ran"), "{}", run.stderr);
    let report = run.json();
    let jobs = report["runs"][0]["jobs"].as_array().unwrap();
    let docker_job = jobs.iter().find(|j| j["id"] == "needs-docker").unwrap();
    assert!(docker_job["error"].as_str().unwrap().contains("Docker engine"), "{docker_job}");
    assert_eq!(jobs.iter().find(|j| j["id"] == "local").unwrap()["status"], "success");
}

/// The deployed containers of one service environment (by label).
fn deployed(label: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label=dev.tandem.deploy={label}"), "--format", "{{.ID}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

/// Waits (bounded) until `n` containers of the environment exist.
fn settles(label: &str, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while deployed(label).len() != n {
        assert!(std::time::Instant::now() < deadline, "{what}: {:?}", deployed(label));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_docker_target_deploys_the_image_its_run_built() {
    images();
    let service = format!("shop{}", std::process::id());
    let image = format!("tandem-test/{service}");
    let workflow = format!(
        "on: push
jobs:
  ship:
    runs-on: ubuntu-latest
    environment: web
    steps:
      - uses: actions/checkout@v4
      - uses: docker/build-push-action@v6
        with:
          context: .
          tags: {image}:latest
"
    );
    let service_file = format!(
        "service: {service}
environments:
  web:
    target: docker
    image: {image}:${{{{ release }}}}
    port: 8080
    instances: 2
    health:
      path: /index.html
      interval: 200ms
      ready-within: 15s
    strategy:
      blue-green:
        keep-old: 0s
"
    );
    let repo = Repo::new(&[("ci.yml", &workflow)]);
    repo.write(".tandem/service.yml", &service_file);
    repo.write(
        "Dockerfile",
        "FROM tandem-test/busybox:1\nCOPY www /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    );
    repo.write("www/index.html", "v1");
    repo.commit("v1");
    let data = tempfile::tempdir().unwrap();
    let server = crate::server::Server::start(data.path(), None);
    crate::server::add_repo(&server, &repo, "shop");
    let label = format!("{service}/web");

    let deploy_from_run = |run: i64| {
        let queued = server.cli(&["repo", "run", "shop"]);
        assert_eq!(queued.code, 0, "{}", queued.all());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let list = server.cli(&["deployments", "list", "--format", "json"]).json();
            if let Some(d) = list.as_array().unwrap().iter().find(|d| d["run_id"] == run) {
                let id = d["id"].to_string();
                return server.cli(&["deployments", "show", &id, "--wait"]);
            }
            let logs = server.cli(&["runs", "logs", &run.to_string()]);
            assert!(std::time::Instant::now() < deadline, "run {run} requested no deployment:\n{}", logs.all());
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    let first = deploy_from_run(1);
    assert_eq!(first.code, 0, "{}", first.all());
    let envs = server.cli(&["environments", "--format", "json"]).json();
    let proxy = envs[0]["listen"].as_str().unwrap().to_string();
    let body = |addr: &str| raw_get(addr, "/", "*/*").split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    assert_eq!(body(&proxy).as_deref(), Some("v1"));
    assert_eq!(deployed(&label).len(), 2, "two containers serve");

    repo.write("www/index.html", "v2");
    repo.commit("v2");
    let second = deploy_from_run(2);
    assert_eq!(second.code, 0, "{}", second.all());
    assert_eq!(body(&proxy).as_deref(), Some("v2"));
    settles(&label, 2, "the old containers are removed after the switch");

    // An image whose server never starts is rolled back before it sees traffic.
    repo.write("Dockerfile", "FROM tandem-test/busybox:1\nCMD [\"false\"]\n");
    repo.commit("v3 does not start");
    let third = deploy_from_run(3);
    assert_eq!(third.code, 1, "{}", third.all());
    assert!(third.stdout.contains("failed health check") && third.stdout.contains("exited"), "{}", third.all());
    assert_eq!(body(&proxy).as_deref(), Some("v2"));
    settles(&label, 2, "the failed release's containers are gone");
    drop(server);
    for id in deployed(&label) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}

/// Builds `tag` from tandem-test/web:1 with `index` as its page and `cmd` as its command.
fn web_image(tag: &str, index: &str, cmd: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), index).unwrap();
    let cmd = cmd.map(|c| format!("CMD {c}\n")).unwrap_or_default();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM tandem-test/web:1\nCOPY index.html /www/index.html\n{cmd}"),
    )
    .unwrap();
    let built = Command::new("docker").args(["build", "-q", "-t", tag]).arg(dir.path()).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
}

/// Deployed swarm services of one environment (by label).
fn services(label: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["service", "ls", "--filter", &format!("label=dev.tandem.deploy={label}"), "--format", "{{.ID}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_swarm_target_runs_each_release_as_a_service_behind_the_proxy() {
    images();
    let swarm = Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&swarm.stdout).trim(),
        "active",
        "the swarm test needs the engine to be a swarm: `docker swarm init --advertise-addr 127.0.0.1` (`cargo xtask test` does it)"
    );
    let service = format!("swarm{}", std::process::id());
    let image = format!("tandem-test/{service}");
    let service_file = format!(
        "service: {service}
environments:
  live:
    target: swarm
    image: {image}:${{{{ release }}}}
    port: 80
    instances: 2
    health:
      path: /index.html
      interval: 300ms
      ready-within: 20s
    strategy:
      blue-green:
        keep-old: 0s
"
    );
    let repo = Repo::new(&[]);
    repo.write(".tandem/service.yml", &service_file);
    let release = |repo: &Repo, index: &str, cmd: Option<&str>| {
        repo.write("index.html", index);
        repo.commit(index);
        let out = Command::new("git").arg("-C").arg(repo.path()).args(["rev-parse", "HEAD"]).output().unwrap();
        let sha = String::from_utf8(out.stdout).unwrap();
        web_image(&format!("{image}:{}", &sha[..12]), index, cmd);
    };
    release(&repo, "v1", None);
    let data = tempfile::tempdir().unwrap();
    let server = crate::server::Server::start(data.path(), None);
    crate::server::add_repo(&server, &repo, "swarmed");
    let label = format!("{service}/live");
    let cleanup = |label: &str| {
        for id in services(label) {
            let _ = Command::new("docker").args(["service", "rm", &id]).output();
        }
    };

    let first = server.cli(&["deploy", "swarmed", "live", "--wait"]);
    if first.code != 0 {
        cleanup(&label);
    }
    assert_eq!(first.code, 0, "{}", first.all());
    let envs = server.cli(&["environments", "--format", "json"]).json();
    let proxy = envs[0]["listen"].as_str().unwrap().to_string();
    let body = |addr: &str| raw_get(addr, "/", "*/*").split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    assert_eq!(body(&proxy).as_deref(), Some("v1"));
    assert_eq!(services(&label).len(), 2, "a service for each of the two instances");

    release(&repo, "v2", None);
    let second = server.cli(&["deploy", "swarmed", "live", "--wait"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert_eq!(body(&proxy).as_deref(), Some("v2"));

    // A release whose tasks never run is rolled back; v2 keeps serving.
    release(&repo, "v3", Some(r#"["false"]"#));
    let third = server.cli(&["deploy", "swarmed", "live", "--wait"]);
    assert_eq!(third.code, 1, "{}", third.all());
    assert!(third.stdout.contains("failed health check"), "{}", third.all());
    assert_eq!(body(&proxy).as_deref(), Some("v2"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while services(&label).len() != 2 {
        assert!(std::time::Instant::now() < deadline, "services left: {:?}", services(&label));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(server);
    cleanup(&label);
}
