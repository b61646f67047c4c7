//! `tandem run`: the DAG, statuses, outputs, files, filters, inputs and limits, end to end.

use crate::{Repo, jobs, pid_alive};

#[test]
fn jobs_pass_outputs_along_the_dag_and_matrix_legs_run() {
    let wf = r#"
name: pipeline
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.v.outputs.version }}
      notes: ${{ steps.v.outputs.notes }}
    steps:
      - uses: actions/checkout@v4
      - id: v
        run: |
          echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
          { echo 'notes<<EOF'; echo 'line one'; echo 'line two'; echo 'EOF'; } >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: ubuntu-latest
    strategy:
      matrix:
        shard: [1, 2, 3]
    steps:
      - run: echo "shard ${{ matrix.shard }}/${{ strategy.job-total }} tests ${{ needs.build.outputs.version }} (${{ needs.build.result }})"
  report:
    needs: [build, test]
    runs-on: ubuntu-latest
    steps:
      - env:
          NOTES: ${{ toJSON(needs.build.outputs.notes) }}
        run: echo "$NOTES"
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    repo.write("VERSION", "2.5.1");
    repo.commit("version");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for shard in 1..=3 {
        assert!(run.stdout.contains(&format!("shard {shard}/3 tests 2.5.1 (success)")), "{}", run.stdout);
    }
    assert!(run.stdout.contains(r#""line one\nline two""#), "{}", run.stdout);
    assert!(run.stdout.contains("✓ pipeline succeeded"), "{}", run.stdout);
    // The summary table lists every leg.
    assert!(run.stdout.contains("test (1)") && run.stdout.contains("test (3)"), "{}", run.stdout);
}

#[test]
fn failures_skip_dependents_and_status_functions_behave_as_on_github() {
    let wf = r#"
on: push
jobs:
  broken:
    runs-on: ubuntu-latest
    steps:
      - run: echo before
      - run: exit 7
      - run: echo "not reached"
      - if: failure()
        run: echo "failure handler ran"
      - if: always()
        run: echo "cleanup ran"
      - if: success()
        run: echo "success step ran"
  after:
    needs: broken
    runs-on: ubuntu-latest
    steps:
      - run: echo "should be skipped"
  notify:
    needs: broken
    if: failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo "notified about ${{ needs.broken.result }}"
  tolerant:
    runs-on: ubuntu-latest
    continue-on-error: false
    steps:
      - id: flaky
        continue-on-error: true
        run: exit 1
      - run: echo "flaky outcome=${{ steps.flaky.outcome }} conclusion=${{ steps.flaky.conclusion }}"
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run", "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let logs = &run.stderr;
    assert!(logs.contains("failure handler ran") && logs.contains("cleanup ran"), "{logs}");
    assert!(
        !logs.contains("| not reached") && !logs.contains("| success step ran") && !logs.contains("should be skipped"),
        "{logs}"
    );
    assert!(logs.contains("notified about failure"), "{logs}");
    assert!(logs.contains("flaky outcome=failure conclusion=success"), "{logs}");
    let report = run.json();
    let statuses = jobs(&report);
    assert!(statuses.contains(&("broken".into(), "failure".into())), "{statuses:?}");
    assert!(statuses.contains(&("after".into(), "skipped".into())), "{statuses:?}");
    assert!(statuses.contains(&("notify".into(), "success".into())), "{statuses:?}");
    assert!(statuses.contains(&("tolerant".into(), "success".into())), "{statuses:?}");
    assert_eq!(report["runs"][0]["status"], "failure");
    let steps = &report["runs"][0]["jobs"][0]["steps"];
    let step_statuses: Vec<&str> = steps.as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(step_statuses, ["success", "failure", "skipped", "success", "success", "skipped"]);
}

#[test]
fn fail_fast_cancels_the_other_legs() {
    let wf = r#"
on: push
jobs:
  legs:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        n: [fast, slow]
    steps:
      - run: |
          if [ "${{ matrix.n }}" = fast ]; then exit 1; fi
          sleep 60
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let started = std::time::Instant::now();
    let run = repo.tandem(&["run", "--format", "json"]);
    assert!(started.elapsed().as_secs() < 30, "the slow leg was not cancelled");
    assert_eq!(run.code, 1, "{}", run.all());
    let statuses = jobs(&run.json());
    assert_eq!(statuses, [("legs (fast)".into(), "failure".into()), ("legs (slow)".into(), "cancelled".into())]);
}

#[test]
fn step_timeouts_kill_background_children_too() {
    let wf = r#"
on: push
jobs:
  slow:
    runs-on: ubuntu-latest
    steps:
      - timeout-minutes: 0.02
        run: |
          sleep 120 &
          echo $! > "$RUNNER_TEMP/../../pid"
          wait
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run", "--keep"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("timed out after"), "{}", run.stdout);
    let pid_file = walk_find(repo.data.path(), "pid").expect("the step wrote its child's pid");
    let pid: i32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    assert!(!pid_alive(pid), "child {pid} outlived the timeout");
}

fn walk_find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = walk_find(&path, name)
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn environment_files_path_summary_and_masking() {
    let wf = r#"
on: push
env:
  LEVEL: workflow
jobs:
  env:
    runs-on: ubuntu-latest
    env:
      JOB_LEVEL: ${{ env.LEVEL }}-job
    steps:
      - run: |
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\necho tool-on-path\n' > "$RUNNER_TEMP/bin/mytool"
          chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
          echo "FROM_FILE=persisted" >> "$GITHUB_ENV"
          echo '### Report' >> "$GITHUB_STEP_SUMMARY"
      - env:
          STEP_LEVEL: step
        run: |
          mytool
          echo "$LEVEL $JOB_LEVEL $STEP_LEVEL $FROM_FILE"
          echo "ref=$GITHUB_REF sha-len=${#GITHUB_SHA} event=$GITHUB_EVENT_NAME ws-set=${GITHUB_WORKSPACE:+yes} ci=$CI"
          echo "the token is ${{ secrets.TOKEN }} and $TOKEN_ENV"
          echo "::add-mask::dynamic-value"
          echo "now hidden: dynamic-value"
        shell: bash
      - run: echo "${{ github.event_name }} ${{ github.ref_name }} ${{ runner.os }}"
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.command(&["run", "--secret", "TOKEN=s3cr3t-value"]).env("TOKEN_ENV", "unused").output().unwrap();
    let run = crate::Run::from(run);
    assert_eq!(run.code, 0, "{}", run.all());
    let out = &run.stdout;
    assert!(out.contains("tool-on-path"), "{out}");
    assert!(out.contains("workflow workflow-job step persisted"), "{out}");
    assert!(out.contains("ref=refs/heads/main sha-len=40 event=push ws-set=yes ci=true"), "{out}");
    assert!(out.contains("the token is ***"), "{out}");
    assert!(!out.contains("s3cr3t-value") && !out.contains("now hidden: dynamic-value"), "{out}");
    assert!(out.contains("now hidden: ***"), "{out}");
    assert!(out.contains("push main Linux"), "{out}");
    assert!(out.contains("── summary of env\n### Report"), "{out}");
    // Logs on disk are masked too.
    let log = std::fs::read_dir(repo.data.path().join("runs")).unwrap().next().unwrap().unwrap().path().join("run.log");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("[env] the token is ***") && !log.contains("s3cr3t-value"), "{log}");
}

#[test]
fn clean_checkout_versus_working_tree() {
    let wf = "on: push\njobs:\n  look:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: cat state.txt; test -f untracked.txt && echo has-untracked || echo no-untracked\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    repo.write("state.txt", "committed\n");
    repo.commit("state");
    repo.write("state.txt", "edited\n");
    repo.write("untracked.txt", "new\n");
    let clean = repo.tandem(&["run"]);
    assert!(clean.stdout.contains("| committed") && clean.stdout.contains("no-untracked"), "{}", clean.all());
    let worktree = repo.tandem(&["run", "--worktree"]);
    assert!(worktree.stdout.contains("| edited") && worktree.stdout.contains("has-untracked"), "{}", worktree.all());
}

#[test]
fn branch_filters_select_workflows() {
    let only_release = "on:\n  push:\n    branches: [release/**]\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: [{run: echo release-ran}]\n";
    let docs = "on:\n  push:\n    paths-ignore: ['**.md']\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: [{run: echo code-ran}]\n";
    let repo = Repo::new(&[("release.yml", only_release), ("code.yml", docs)]);
    repo.write("notes.md", "docs only\n");
    repo.commit("docs");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("skipping .github/workflows/release.yml: branch `main` is filtered out"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no changed file passes the paths filter"), "{}", run.stderr);
    // The folders made for a run while git answered go again when no run starts.
    let runs = repo.data.path().join("runs");
    assert!(std::fs::read_dir(&runs).map_or(true, |mut entries| entries.next().is_none()), "{runs:?} kept a run");
    repo.git(&["checkout", "-q", "-b", "release/1.0"]);
    repo.write("src.rs", "fn main() {}\n");
    repo.commit("code");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("release-ran") && run.stdout.contains("code-ran"), "{}", run.stdout);
}

#[test]
fn dispatch_inputs_are_typed() {
    let wf = r#"
on:
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
      dry:
        type: boolean
        default: true
      count:
        type: number
        required: true
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - run: echo "level=${{ inputs.level }} dry=${{ inputs.dry }} count+1=${{ inputs.count }} strict=${{ inputs.dry == true }}"
"#;
    let repo = Repo::new(&[("deploy.yml", wf)]);
    let run = repo.tandem(&["run", "deploy", "--input", "count=3"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("level=low dry=true count+1=3 strict=true"), "{}", run.stdout);
    let run = repo.tandem(&["run", "deploy", "--input", "count=3", "--input", "level=extreme"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("must be one of low, high"), "{}", run.stderr);
    let run = repo.tandem(&["run", "deploy"]);
    assert!(run.stderr.contains("input `count` is required"), "{}", run.stderr);
}

/// A step's folder and a job's folders are checked by their change time once it is old enough to
/// trust (50 ms): writes made after a quiet spell are still read, and a job that left files
/// behind still hands the next job empty folders.
#[test]
fn files_written_after_a_quiet_spell_are_read_and_folders_come_back_empty() {
    let wf = r#"
on: push
jobs:
  quiet:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 0.2
      - id: late
        run: |
          echo "value=written-late" >> "$GITHUB_OUTPUT"
          echo "LATE_ENV=set-late" >> "$GITHUB_ENV"
      - run: sleep 0.2
      - run: echo "seen ${{ steps.late.outputs.value }} $LATE_ENV"
  litter:
    needs: quiet
    runs-on: ubuntu-latest
    steps:
      - run: sleep 0.2
      - run: echo left > "$GITHUB_WORKSPACE/left-behind" && echo left > "$RUNNER_TEMP/left-behind"
  after:
    needs: litter
    runs-on: ubuntu-latest
    steps:
      - run: |
          sleep 0.2
          echo "workspace holds [$(ls -A "$GITHUB_WORKSPACE")] temp holds [$(ls -A "$RUNNER_TEMP")]"
  last:
    needs: after
    runs-on: ubuntu-latest
    steps:
      - run: echo "workspace holds [$(ls -A "$GITHUB_WORKSPACE")] temp holds [$(ls -A "$RUNNER_TEMP")]"
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run", "-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("seen written-late set-late"), "{}", run.stdout);
    // With one job at a time the run keeps two slots, so `after` and `last` get the slots that
    // `quiet` and `litter` used, one of them the littered one.
    assert_eq!(run.stdout.matches("workspace holds [] temp holds []").count(), 2, "{}", run.stdout);
}

#[test]
fn the_parallel_limit_is_respected() {
    let job = |name: &str| {
        format!(
            "  {name}:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo start $(date +%s%N) >> \"$RUNNER_TOOL_CACHE/../times\"; sleep 0.3; echo end $(date +%s%N) >> \"$RUNNER_TOOL_CACHE/../times\"\n"
        )
    };
    let wf = format!("on: push\njobs:\n{}{}{}", job("a"), job("b"), job("c"));
    let repo = Repo::new(&[("ci.yml", &wf)]);
    let run = repo.tandem(&["run", "-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let times = std::fs::read_to_string(repo.data.path().join("times")).unwrap();
    let kinds: Vec<&str> = times.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(kinds, ["start", "end", "start", "end", "start", "end"], "jobs overlapped:\n{times}");
}

#[test]
fn what_cannot_run_fails_clearly_before_any_step() {
    // An action no source has fails the job as it is set up, before its first step.
    let wf = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo should-not-run\n      - uses: actions/setup-node@v4\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run", "--action-source", "/nonexistent/mirrors"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("cannot fetch the action actions/setup-node@v4; tried 1"), "{}", run.all());
    assert!(!run.all().contains("| should-not-run"), "{}", run.all());
    let windows = "on: push\njobs:\n  a:\n    runs-on: windows-latest\n    steps:\n      - run: echo hi\n";
    let repo = Repo::new(&[("ci.yml", windows)]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("Tandem runs jobs on Linux"), "{}", run.stdout);
}

#[test]
fn a_condition_of_text_with_an_expression_inside_runs_as_on_github_with_a_warning() {
    let wf = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - if: true && ${{ false }}\n        run: echo ran-mixed\n      - if: ${{ false }}\n        run: echo ran-false\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let checked = repo.tandem(&["validate"]);
    assert_eq!(checked.code, 0, "{}", checked.all());
    assert!(checked.stdout.contains("warning[condition-is-text]"), "{}", checked.stdout);
    assert!(checked.stdout.contains("always true (as on GitHub)"), "{}", checked.stdout);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("| ran-mixed"), "{}", run.all());
    assert!(!run.all().contains("| ran-false"), "{}", run.all());
}

#[test]
fn stop_commands_turns_workflow_commands_off_until_its_token() {
    let wf = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo '::stop-commands::pause-here'\n          echo '::add-mask::not-a-secret'\n          echo '::pause-here::'\n          echo '::warning::commands again'\n          echo not-a-secret\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("| ::add-mask::not-a-secret"), "shown as it is: {}", run.all());
    assert!(run.all().contains("| not-a-secret"), "no mask was added: {}", run.all());
    assert!(run.all().contains("warning: commands again"), "{}", run.all());
}

/// Ways other CI systems' logs have been made to show a secret, and whether Tandem masks them.
#[test]
fn secrets_are_masked_in_their_common_disguises() {
    let wf = r#"on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "plain: $TOKEN"
          printf '%s' "$TOKEN" | base64 | sed 's/^/base64: /'
          printf '%s' "$TOKEN" | base64 | tr -d '=' | sed 's/^/unpadded: /'
          python3 -c 'import os, urllib.parse; print("url:", urllib.parse.quote(os.environ["TOKEN"], safe=""))'
          python3 -c 'import os, json; print("json:", json.dumps({"t": os.environ["TOKEN"]}))'
          printf '%s\n' "$KEY" | sed 's/^/key line: /'
          # One line, written in two pieces with a pause between them.
          printf 'split: '; printf '%s' "$TOKEN" | head -c 5; sleep 0.3; printf '%s\n' "$(printf '%s' "$TOKEN" | tail -c +6)"
        env:
          TOKEN: ${{ secrets.TOKEN }}
          KEY: ${{ secrets.KEY }}
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let token = "p@ss/word+with \"quotes\" & more";
    let key =
        "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END KEY-----";
    let mut command = repo.command(&["run", "--secret", "TOKEN", "--secret", "KEY"]);
    command.env("TOKEN", token).env("KEY", key);
    let run = crate::Run::from(command.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.all());
    let log = std::fs::read_dir(repo.data.path().join("runs")).unwrap().next().unwrap().unwrap().path().join("run.log");
    let mut text = run.all();
    text.push_str(&std::fs::read_to_string(log).unwrap());
    for (form, label) in [
        (token.to_string(), "plain"),
        ("cEBzcy93b3JkK3dpdGggInF1b3RlcyIgJiBtb3Jl".to_string(), "base64"),
        ("p%40ss%2Fword%2Bwith%20%22quotes%22%20%26%20more".to_string(), "url"),
        (r#"p@ss/word+with \"quotes\" & more"#.to_string(), "json"),
        ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_string(), "a line of a multi-line secret"),
    ] {
        assert!(!text.contains(&form), "the {label} form leaked:\n{text}");
    }
    for shown in ["plain: ***", "base64: ***", "unpadded: ***", "url: ***", "key line: ***", "split: ***"] {
        assert!(text.contains(shown), "missing {shown:?}:\n{text}");
    }
}

#[test]
fn artifacts_download_only_into_the_jobs_own_folders() {
    let wf = |path: &str| {
        format!(
            "on: push\njobs:\n  up:\n    runs-on: ubuntu-latest\n    steps:\n      - run: mkdir -p out && echo payload > out/f.txt\n      - uses: actions/upload-artifact@v4\n        with: {{ name: art, path: out/ }}\n  down:\n    needs: up\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/download-artifact@v4\n        with: {{ name: art, path: '{path}' }}\n      - run: cat '{path}/f.txt'\n"
        )
    };
    let repo = Repo::new(&[("ci.yml", &wf("dl"))]);
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("| payload"), "{}", run.all());
    let outside = repo.data.path().join("escaped");
    repo.write(".github/workflows/ci.yml", &wf(&format!("../../../../../../../..{}", outside.display())));
    repo.commit("escape");
    let run = repo.tandem(&["run"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("is outside the workspace"), "{}", run.all());
    assert!(!outside.exists(), "the artifact left the workspace");
}
