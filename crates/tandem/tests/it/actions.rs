//! Real actions, run for real: the four actions of the shared corpus (GitHub's github-script,
//! cache and hello-world Docker action, dtolnay's rust-toolchain), served from a local action
//! source (a directory of bare repositories made from their git bundles), and local actions
//! with `pre`/`post` and state.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Repo, jobs};

/// A directory of bare repositories, `owner/repo.git`, cloned from the corpus bundles.
fn action_source() -> &'static Path {
    static SOURCE: OnceLock<tempfile::TempDir> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let bundles = crate::project_root().join("../shared/corpus/actions");
            assert!(bundles.is_dir(), "{} is missing; CI lays the shared corpus beside the clone", bundles.display());
            let dir = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(&bundles).unwrap() {
                let path = entry.unwrap().path();
                let Some(name) = path.file_name().unwrap().to_str().unwrap().strip_suffix(".bundle") else { continue };
                let (owner, repo) = name.split_once("__").unwrap();
                let target = dir.path().join(owner).join(format!("{repo}.git"));
                let status = Command::new("git")
                    .args(["clone", "-q", "--bare"])
                    .arg(&path)
                    .arg(&target)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "git clone {}", path.display());
            }
            dir
        })
        .path()
}

fn source_arg() -> String {
    action_source().to_string_lossy().into_owned()
}

fn run(repo: &Repo, extra: &[&str]) -> crate::Run {
    let source = source_arg();
    let mut args = vec!["run", "--format", "json", "--action-source", source.as_str()];
    args.extend_from_slice(extra);
    repo.tandem(&args)
}

/// The logs of the finished runs.
fn log(repo: &Repo) -> String {
    let runs = repo.data.path().join("runs");
    let mut text = String::new();
    for run in std::fs::read_dir(runs).unwrap() {
        text.push_str(&std::fs::read_to_string(run.unwrap().path().join("run.log")).unwrap_or_default());
    }
    text
}

fn commit_of(owner: &str, repo: &str, git_ref: &str) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(action_source().join(owner).join(format!("{repo}.git")))
        .args(["rev-parse", &format!("{git_ref}^{{commit}}")])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn github_script_returns_its_result_and_a_pinned_commit_is_checked() {
    let pinned = commit_of("actions", "github-script", "v7.1.0");
    let workflow = format!(
        r#"on: push
jobs:
  script:
    runs-on: ubuntu-latest
    steps:
      - id: s
        uses: actions/github-script@v7
        with:
          result-encoding: string
          script: |
            core.info(`event ${{context.eventName}} on ${{context.ref}}`)
            return 6 * 7
      - id: json
        uses: actions/github-script@{pinned}
        with:
          script: |
            return {{ answer: Number(process.env.ANSWER) + 1 }}
        env:
          ANSWER: ${{{{ steps.s.outputs.result }}}}
      - run: |
          test "${{{{ steps.s.outputs.result }}}}" = 42
          echo 'json=${{{{ steps.json.outputs.result }}}}'
"#
    );
    let repo = Repo::new(&[("ci.yml", &workflow)]);
    let out = run(&repo, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(jobs(&out.json()), [("script".to_string(), "success".to_string())]);
    let log = log(&repo);
    assert!(log.contains("event push on refs/heads/main"), "{log}");
    assert!(log.contains(r#"json={"answer":43}"#), "{log}");

    // A commit that is not in the source is refused, saying which sources were tried.
    let wrong = "0123456789abcdef0123456789abcdef01234567";
    repo.write(".github/workflows/ci.yml", &workflow.replace(&pinned, wrong));
    repo.commit("pin a commit that does not exist");
    let out = run(&repo, &[]);
    assert_ne!(out.code, 0);
    let text = out.all();
    assert!(text.contains(&format!("cannot fetch the action actions/github-script@{wrong}")), "{text}");
    assert!(text.contains(&source_arg()), "the source tried is named: {text}");
}

#[test]
fn a_docker_action_builds_its_image_once_and_sets_its_output() {
    crate::containers::images();
    // The action's Dockerfile says `FROM alpine:3.10`, which no registry here can give.
    let tag = Command::new("docker").args(["tag", "tandem-test/busybox:1", "alpine:3.10"]).status().unwrap();
    assert!(tag.success());
    let repo = Repo::new(&[(
        "ci.yml",
        r#"on: push
jobs:
  hello:
    runs-on: ubuntu-latest
    steps:
      - id: hello
        uses: actions/hello-world-docker-action@v2
        with:
          who-to-greet: Tandem
      - run: test -n "${{ steps.hello.outputs.time }}" && echo "greeted at ${{ steps.hello.outputs.time }}"
"#,
    )]);
    let out = run(&repo, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let log = log(&repo);
    assert!(log.contains("Hello Tandem"), "{log}");
    assert!(log.contains("greeted at "), "{log}");
    // The second run finds the image built from the same files.
    let out = run(&repo, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// Serves `dir` over HTTP on loopback (GET only), for as long as the test runs.
fn serve_files(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let mut stream = stream;
            match std::fs::read(dir.join(&path)) {
                Ok(body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    let _ = write!(stream, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                }
            }
        }
    });
    port
}

#[test]
fn the_rust_toolchain_composite_action_sets_up_the_toolchain_already_installed() {
    // rustup runs for real, in a home of its own whose one toolchain is the one installed here,
    // and asks a distribution server on loopback that serves that toolchain's own manifest: so
    // "install" finds it up to date, and nothing on this machine changes.
    let text = |program: &str, args: &[&str]| {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let sysroot = PathBuf::from(text("rustc", &["--print", "sysroot"]));
    let verbose = text("rustc", &["-vV"]);
    let field = |name: &str| verbose.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    let (version, host) = (field("release:"), field("host:"));
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("toolchains")).unwrap();
    std::os::unix::fs::symlink(&sysroot, home.path().join(format!("toolchains/{version}-{host}"))).unwrap();
    std::fs::write(home.path().join("settings.toml"), "version = \"12\"\nprofile = \"minimal\"\n").unwrap();
    let dist = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dist.path().join("dist")).unwrap();
    let manifest = std::fs::read(sysroot.join("lib/rustlib/multirust-channel-manifest.toml")).unwrap();
    let name = format!("channel-rust-{version}.toml");
    std::fs::write(dist.path().join("dist").join(&name), &manifest).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&manifest))
    };
    std::fs::write(dist.path().join("dist").join(format!("{name}.sha256")), format!("{digest}  {name}\n")).unwrap();
    let port = serve_files(dist.path().to_path_buf());
    let workflow = format!(
        r#"on: push
jobs:
  rust:
    runs-on: ubuntu-latest
    env:
      RUSTUP_HOME: {home}
      RUSTUP_DIST_SERVER: http://127.0.0.1:{port}
    steps:
      - id: toolchain
        uses: dtolnay/rust-toolchain@master
        with:
          toolchain: {version}
          components: ""
      - run: |
          echo "name=${{{{ steps.toolchain.outputs.name }}}} cachekey=${{{{ steps.toolchain.outputs.cachekey }}}}"
          echo "incremental=$CARGO_INCREMENTAL colour=$CARGO_TERM_COLOR"
          rustc --version
"#,
        home = home.path().display()
    );
    let repo = Repo::new(&[("ci.yml", &workflow)]);
    // A runner's environment names no toolchain; cargo's (rustup 1.29 and later) names the one it
    // runs with, which rustup would then look for in the home above instead of the default.
    let source = source_arg();
    let mut command = repo.command(&["run", "--format", "json", "--action-source", source.as_str()]);
    command.env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    let out = crate::Run::from(command.output().unwrap());
    assert_eq!(out.code, 0, "{}\n{}", out.all(), log(&repo));
    let log = log(&repo);
    // Outputs computed from inner steps' outputs; `$GITHUB_ENV` from inside the action.
    let commit_date = field("commit-date:").replace('-', "");
    let cachekey: String = format!("{commit_date}{}", field("commit-hash:")).chars().take(12).collect();
    assert!(log.contains(&format!("name={version} cachekey={cachekey}")), "{log}");
    assert!(log.contains("incremental=0 colour=always"), "{log}");
    assert!(log.contains(&format!("{version}-{host} unchanged")), "rustup found the toolchain: {log}");
    assert!(log.contains(&format!("rustc {version}")), "{log}");
    // `rustup default` ran in the action's home, not in this machine's.
    let settings = std::fs::read_to_string(home.path().join("settings.toml")).unwrap();
    assert!(settings.contains(&format!("default_toolchain = \"{version}-{host}\"")), "{settings}");
}

#[test]
fn local_actions_run_pre_main_and_post_in_order_and_keep_their_state() {
    let repo = Repo::new(&[(
        "ci.yml",
        r#"on: push
jobs:
  local:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: js
        uses: ./.github/actions/js
        with:
          who: first
      - id: wrapped
        uses: ./.github/actions/wrapper
        with:
          greeting: hi
      - run: |
          echo "js said ${{ steps.js.outputs.said }}"
          echo "wrapper gave ${{ steps.wrapped.outputs.shout }}"
          exit 3
      - run: echo never
"#,
    )]);
    // A JavaScript action with pre, main and post that pass state along, and a post that runs
    // only when the job failed.
    repo.write(
        ".github/actions/js/action.yml",
        r#"name: js
inputs:
  who:
    required: true
  unused:
    default: ${{ github.event_name }}
runs:
  using: node20
  main: main.js
  post: post.js
  post-if: failure()
"#,
    );
    repo.write(
        ".github/actions/js/main.js",
        r#"const fs = require("fs");
console.log(`main: who=${process.env.INPUT_WHO} unused=${process.env.INPUT_UNUSED} path=${process.env.GITHUB_ACTION_PATH.endsWith(".github/actions/js")}`);
fs.appendFileSync(process.env.GITHUB_STATE, "seen=yes\n");
console.log("::save-state name=old::the deprecated way");
fs.appendFileSync(process.env.GITHUB_OUTPUT, `said=hello ${process.env.INPUT_WHO}\n`);
"#,
    );
    repo.write(
        ".github/actions/js/post.js",
        "console.log(`post: state seen=${process.env.STATE_seen} old=${process.env.STATE_old}`);\n",
    );
    // A composite action that calls the JavaScript action and a shell step, and maps an output.
    repo.write(
        ".github/actions/wrapper/action.yml",
        r#"name: wrapper
inputs:
  greeting:
    default: hello
outputs:
  shout:
    value: ${{ steps.upper.outputs.text }}
runs:
  using: composite
  steps:
    - uses: ./.github/actions/js
      with:
        who: nested
    - id: upper
      shell: bash
      run: echo "text=$(echo '${{ inputs.greeting }}' | tr a-z A-Z)!" >> "$GITHUB_OUTPUT"
    - if: inputs.greeting == 'never'
      shell: bash
      run: echo "skipped step ran"
"#,
    );
    repo.commit("local actions");
    let out = run(&repo, &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    let log = log(&repo);
    assert!(log.contains("main: who=first unused=push path=true"), "{log}");
    assert!(log.contains("main: who=nested"), "{log}");
    assert!(log.contains("js said hello first"), "{log}");
    assert!(log.contains("wrapper gave HI!"), "{log}");
    assert!(!log.contains("skipped step ran"), "{log}");
    assert!(!log.contains("never\n"), "{log}");
    // Posts run after the failure, last registered first, each with the state its main saved.
    let posts: Vec<usize> = log.match_indices("post: state seen=yes old=the deprecated way").map(|(i, _)| i).collect();
    assert_eq!(posts.len(), 2, "{log}");
    let failure = log.find("exited with code 3").expect("the failing step's exit");
    assert!(posts[0] > failure, "posts run after the failing step: {log}");
}

#[test]
fn pulled_actions_run_without_a_source_and_are_listed() {
    let repo = Repo::new(&[(
        "ci.yml",
        r#"on: push
jobs:
  script:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/github-script@v7
        with:
          script: core.info("offline and fine")
"#,
    )]);
    let source = source_arg();
    let pulled = repo.tandem(&["actions", "pull", "--action-source", &source]);
    assert_eq!(pulled.code, 0, "{}", pulled.all());
    assert!(pulled.stdout.contains("✓ actions/github-script@v7"), "{}", pulled.all());
    let listed = repo.tandem(&["actions", "list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["repository"], "actions/github-script");
    assert_eq!(listed[0]["commit"], commit_of("actions", "github-script", "v7"));
    assert_eq!(listed[0]["refs"][0], "v7");
    // No source answers now: the ref's last resolution is used, with a warning.
    let out = repo.tandem(&["run", "--action-source", "/nonexistent/mirrors"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let log = log(&repo);
    assert!(log.contains("offline and fine"), "{log}");
    assert!(log.contains("no action source answered for actions/github-script@v7"), "{log}");
    // A ref never resolved cannot run offline; the error names what was tried.
    repo.write(
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/cache@v4.2.3\n        with: { path: x, key: y }\n",
    );
    repo.commit("another action");
    let out = repo.tandem(&["run", "--no-builtin-actions", "--action-source", "/nonexistent/mirrors"]);
    assert_ne!(out.code, 0);
    assert!(out.all().contains("/nonexistent/mirrors: no repository actions/cache there"), "{}", out.all());
}

#[test]
fn the_real_cache_action_saves_in_one_run_and_restores_in_the_next_through_the_cache_service() {
    let workflow = |version: &str| {
        format!(
            r#"on: push
jobs:
  cache:
    runs-on: ubuntu-latest
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-{version}
          restore-keys: deps-
      - run: |
          echo "hit=${{{{ steps.cache.outputs.cache-hit }}}}"
          if [ -f deps/made ]; then echo "found $(cat deps/made)"; else mkdir -p deps && echo "{version}" > deps/made; fi
"#
        )
    };
    let repo = Repo::new(&[("ci.yml", &workflow("1"))]);
    let cache = |repo: &Repo| {
        let out = run(repo, &["--no-builtin-actions"]);
        assert_eq!(out.code, 0, "{}", out.all());
        let text = log(repo);
        std::fs::remove_dir_all(repo.data.path().join("runs")).unwrap();
        text
    };
    // First run on main: a miss; the action's post step uploads the archive.
    let first = cache(&repo);
    assert!(first.contains("Cache not found for input keys: deps-1, deps-"), "{first}");
    assert!(first.contains("Cache saved with key: deps-1"), "{first}");
    // Second run: the exact key hits and the files come back.
    let second = cache(&repo);
    assert!(second.contains("hit=true") && second.contains("found 1"), "{second}");
    // A branch reads main's entries; what it saves stays its own.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(".github/workflows/ci.yml", &workflow("2"));
    repo.commit("key 2");
    let branch = cache(&repo);
    assert!(branch.contains("Cache restored from key: deps-1"), "{branch}");
    assert!(branch.contains("Cache saved with key: deps-2"), "{branch}");
    repo.git(&["checkout", "-q", "main"]);
    repo.write(".github/workflows/ci.yml", &workflow("2"));
    repo.commit("key 2 on main");
    let main = cache(&repo);
    assert!(main.contains("Cache restored from key: deps-1"), "main does not see the branch's deps-2: {main}");
}

const CALLED: &str = r#"on:
  workflow_call:
    inputs:
      target:
        type: string
        required: true
      count:
        type: number
        default: 1
    outputs:
      artifact:
        value: ${{ jobs.compile.outputs.name }}
    secrets:
      DEPLOY_KEY:
        required: true
jobs:
  compile:
    runs-on: ubuntu-latest
    outputs:
      name: ${{ steps.n.outputs.name }}
    steps:
      - id: n
        run: echo "name=app-${{ inputs.target }}-${{ inputs.count }}" >> "$GITHUB_OUTPUT"
      - run: echo "key is ${{ secrets.DEPLOY_KEY }} and ${{ secrets.OTHER == '' && 'other is not passed' || 'other leaked' }}"
  nested:
    uses: ./.github/workflows/leaf.yml
    with:
      who: ${{ inputs.target }}
"#;

const LEAF: &str = r#"on:
  workflow_call:
    inputs:
      who:
        type: string
        required: true
jobs:
  leaf:
    runs-on: ubuntu-latest
    steps:
      - run: echo "leaf for ${{ inputs.who }}"
"#;

#[test]
fn reusable_workflows_take_inputs_and_secrets_nest_and_give_outputs_to_the_jobs_that_need_them() {
    let caller = r#"on: push
jobs:
  build:
    uses: ./.github/workflows/build.yml
    with:
      target: linux
      count: ${{ fromJSON('3') }}
    secrets:
      DEPLOY_KEY: ${{ secrets.KEY }}
  after:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo "artifact=${{ needs.build.outputs.artifact }} result=${{ needs.build.result }}"
"#;
    let repo = Repo::new(&[("ci.yml", caller), ("build.yml", CALLED), ("leaf.yml", LEAF)]);
    let out = repo.tandem(&[
        "run",
        "ci",
        "--secret",
        "KEY=s3cr3t-value",
        "--secret",
        "OTHER=other-secret",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let names: Vec<String> = jobs(&out.json()).into_iter().map(|(name, status)| format!("{name}: {status}")).collect();
    assert_eq!(
        names,
        [
            "build: success",
            "build / compile: success",
            "build / nested: success",
            "build / nested / leaf: success",
            "after: success"
        ]
    );
    let log = log(&repo);
    assert!(log.contains("artifact=app-linux-3 result=success"), "{log}");
    assert!(log.contains("leaf for linux"), "{log}");
    assert!(log.contains("key is *** and other is not passed"), "the secret is passed and masked: {log}");
}

#[test]
fn a_reusable_workflow_called_wrongly_is_refused_before_it_runs() {
    let call = |with: &str, secrets: &str| {
        format!(
            "on: push\njobs:\n  build:\n    uses: ./.github/workflows/build.yml\n    with:\n{with}    secrets:\n{secrets}  after:\n    needs: build\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo never\n"
        )
    };
    let cases = [
        (
            call("      target: x\n      colour: red\n", "      DEPLOY_KEY: k\n"),
            "has no input `colour`; it declares target, count",
        ),
        (call("      count: 2\n", "      DEPLOY_KEY: k\n"), "needs the input `target`"),
        (call("      target: x\n", "      NOT_IT: k\n"), "needs the secret `DEPLOY_KEY`"),
        (
            call("      target: x\n      count: many\n", "      DEPLOY_KEY: k\n"),
            "input `count` must be a number, found `many`",
        ),
    ];
    for (caller, expected) in cases {
        let repo = Repo::new(&[("ci.yml", &caller), ("build.yml", CALLED), ("leaf.yml", LEAF)]);
        let checked = repo.tandem(&["validate"]);
        assert_eq!(checked.code, 1, "{}", checked.all());
        assert!(checked.stdout.contains(expected), "expected {expected:?}:\n{}", checked.stdout);
        assert!(checked.stdout.contains(".github/workflows/ci.yml:"), "the place is named: {}", checked.stdout);
        let out = repo.tandem(&["run", "ci"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(!out.all().contains("never"));
    }
    // Workflows that call each other in a circle are named as such.
    let a = "on:\n  push:\n  workflow_call:\njobs:\n  next:\n    uses: ./.github/workflows/b.yml\n";
    let b = "on:\n  workflow_call:\njobs:\n  back:\n    uses: ./.github/workflows/a.yml\n";
    let repo = Repo::new(&[("a.yml", a), ("b.yml", b)]);
    let checked = repo.tandem(&["validate"]);
    assert!(
        checked.stdout.contains(
            "reusable workflows call each other in a cycle: .github/workflows/a.yml → .github/workflows/b.yml → .github/workflows/a.yml"
        ),
        "{}",
        checked.stdout
    );
}

#[test]
fn a_remote_reusable_workflow_is_fetched_checked_when_it_runs_and_stops_at_the_depth_limit() {
    // A repository of shared workflows in a source of its own: `team/shared`.
    let source = tempfile::tempdir().unwrap();
    let shared = source.path().join("team/shared");
    std::fs::create_dir_all(shared.join(".github/workflows")).unwrap();
    std::fs::write(
        shared.join(".github/workflows/build.yml"),
        CALLED.replace("./.github/workflows/leaf.yml", "team/shared/.github/workflows/leaf.yml@main"),
    )
    .unwrap();
    std::fs::write(shared.join(".github/workflows/leaf.yml"), LEAF).unwrap();
    // Calls itself: only the depth limit stops it.
    std::fs::write(
        shared.join(".github/workflows/loop.yml"),
        "on:\n  workflow_call:\njobs:\n  again:\n    uses: team/shared/.github/workflows/loop.yml@main\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "shared"],
    ] {
        assert!(Command::new("git").arg("-C").arg(&shared).args(args).status().unwrap().success());
    }
    let source_arg = source.path().to_string_lossy().into_owned();
    let caller = |with: &str| {
        format!(
            "on: push\njobs:\n  build:\n    uses: team/shared/.github/workflows/build.yml@main\n    with:\n{with}    secrets:\n      DEPLOY_KEY: k\n  after:\n    needs: build\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"got ${{{{ needs.build.outputs.artifact }}}}\"\n"
        )
    };
    let repo = Repo::new(&[("ci.yml", &caller("      target: arm\n"))]);
    let out = repo.tandem(&["run", "--action-source", &source_arg]);
    assert_eq!(out.code, 0, "{}", out.all());
    let text = log(&repo);
    assert!(text.contains("got app-arm-1") && text.contains("leaf for arm"), "{text}");
    // A wrong call of a remote workflow fails its job when it runs, with the reason.
    repo.write(".github/workflows/ci.yml", &caller("      target: arm\n      colour: red\n"));
    repo.commit("wrong input");
    let out = repo.tandem(&["run", "--action-source", &source_arg]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("has no input `colour`; it declares target, count"), "{}", out.all());
    repo.write(
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  go:\n    uses: team/shared/.github/workflows/loop.yml@main\n",
    );
    repo.commit("loop");
    let out = repo.tandem(&["run", "--action-source", &source_arg]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("reusable workflows nest deeper than 10 levels"), "{}", out.all());
}

#[test]
fn artifacts_go_up_and_come_down_through_the_artifact_service_with_the_real_client() {
    // `@actions/artifact` 2.3.2 — what upload-artifact@v4 and download-artifact@v4 are built on —
    // from npm (`cargo xtask test` installs it into target/npm).
    let modules = crate::project_root().join("target/npm/node_modules");
    assert!(
        modules.join("@actions/artifact/package.json").is_file(),
        "{} is missing; `cargo xtask test` installs @actions/artifact from the npm registry",
        modules.display()
    );
    let repo = Repo::new(&[(
        "ci.yml",
        r#"on: push
jobs:
  up:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/art
        with: { mode: upload }
  down:
    needs: up
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/art
        with: { mode: download }
"#,
    )]);
    repo.write(
        ".github/actions/art/action.yml",
        "name: art\ninputs:\n  mode:\n    required: true\nruns:\n  using: node20\n  main: index.js\n",
    );
    repo.write(
        ".github/actions/art/index.js",
        r#"const { DefaultArtifactClient } = require('@actions/artifact');
const fs = require('fs');
(async () => {
  const client = new DefaultArtifactClient();
  if (process.env.INPUT_MODE === 'upload') {
    fs.mkdirSync('out/deep', { recursive: true });
    fs.writeFileSync('out/a.txt', 'hello artifact\n');
    fs.writeFileSync('out/deep/b.bin', Buffer.alloc(3 << 20, 7));
    const r = await client.uploadArtifact('my-art', ['out/a.txt', 'out/deep/b.bin'], 'out');
    console.log(`uploaded id=${r.id}`);
  } else {
    const { artifact } = await client.getArtifact('my-art');
    const r = await client.downloadArtifact(artifact.id, { path: 'back' });
    const big = fs.readFileSync('back/deep/b.bin');
    console.log(`downloaded: ${fs.readFileSync('back/a.txt', 'utf8').trim()}, ${big.length} bytes of ${big[0]}`);
    try { await client.getArtifact('missing'); } catch (e) { console.log(`missing: ${e.name}`); }
  }
})().catch(e => { console.error(e); process.exit(1); });
"#,
    );
    repo.commit("artifact action");
    let out = repo.command(&["run"]).env("NODE_PATH", &modules).output().unwrap();
    let out = crate::Run::from(out);
    assert_eq!(out.code, 0, "{}\n{}", out.all(), log(&repo));
    let text = log(&repo);
    assert!(text.contains("uploaded id=1"), "{text}");
    assert!(text.contains("downloaded: hello artifact, 3145728 bytes of 7"), "{text}");
    assert!(text.contains("missing: ArtifactNotFoundError"), "{text}");
}

#[test]
fn a_repository_names_its_own_action_sources() {
    let repo = Repo::new(&[(
        "ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/github-script@v7\n        with:\n          script: core.info('from the repository source')\n",
    )]);
    repo.write(".tandem/action-sources", &format!("# our mirrors\n{}\n", source_arg()));
    repo.commit("action sources");
    let out = repo.tandem(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(log(&repo).contains("from the repository source"));
    let pulled = repo.tandem(&["actions", "pull"]);
    assert_eq!(pulled.code, 0, "{}", pulled.all());
}
