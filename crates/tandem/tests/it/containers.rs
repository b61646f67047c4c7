//! Container jobs and service containers on a real Docker engine. Images are built here from a
//! busybox-static root filesystem (`docker import`), since no registry is reachable.

use std::process::Command;
use std::sync::OnceLock;

use crate::Repo;

/// Builds the test images once: `tandem-test/busybox` (a shell) and `tandem-test/web` (an HTTP
/// server serving /www). Returns false, with a note, where no engine runs outside CI.
fn images() -> bool {
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
    match ready {
        Ok(()) => true,
        Err(why) => {
            assert!(std::env::var_os("TANDEM_REQUIRE_DOCKER").is_none(), "Docker is required here: {why}");
            eprintln!("note: container tests skipped: {why}");
            false
        }
    }
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
    if !images() {
        return;
    }
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
    let repo = Repo::new(&[("ci.yml", wf)]);
    repo.write("data.txt", "checked-out\n");
    repo.commit("data");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for expected in
        ["busybox only; FROM_CONTAINER=set; file=checked-out", "hello from the web service", "output 42 on main"]
    {
        assert!(run.stdout.contains(expected), "missing {expected:?} in\n{}", run.stdout);
    }
    assert!(leftovers("ctr-happy").is_empty(), "left behind: {:?}", leftovers("ctr-happy"));
}

#[test]
fn an_unhealthy_service_fails_the_job_with_its_last_log_lines() {
    if !images() {
        return;
    }
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
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("service `db` is unhealthy"), "{}", run.stdout);
    assert!(!run.stdout.contains("| must not run"), "{}", run.stdout);
    assert!(leftovers("ctr-sick").is_empty(), "left behind: {:?}", leftovers("ctr-sick"));
}

#[test]
fn missing_images_and_timeouts_are_reported_as_such() {
    if !images() {
        return;
    }
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
    let repo = Repo::new(&[("ci.yml", wf)]);
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
    assert_eq!(statuses, [("ctr-missing".into(), "failure".into()), ("ctr-slow".into(), "failure".into())]);
    assert!(
        leftovers("ctr-").iter().all(|n| !n.contains("ctr-missing") && !n.contains("ctr-slow")),
        "{:?}",
        leftovers("ctr-")
    );
}

#[test]
fn leftovers_of_a_dead_tandem_are_reaped() {
    if !images() {
        return;
    }
    // A container as a crashed Tandem (pid 999999, which does not exist) would have left it.
    let stale = Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            "dev.tandem.owner=999999",
            "--name",
            "tandem-stale-ctr-reap",
            "tandem-test/busybox:1",
            "sleep",
            "300",
        ])
        .output()
        .unwrap();
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));
    let wf = "on: push\njobs:\n  ctr-reaper:\n    runs-on: ubuntu-latest\n    container: tandem-test/busybox:1\n    steps:\n      - run: echo ok\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(leftovers("tandem-stale-ctr-reap").is_empty(), "the stale container survived");
}

#[test]
fn docker_image_steps_see_the_workspace_and_write_outputs() {
    if !images() {
        return;
    }
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
    let repo = Repo::new(&[("ci.yml", wf)]);
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
    assert!(leftovers("ctr-image-step").is_empty(), "{:?}", leftovers("ctr-image-step"));
}
