//! bkd as a drop-in for `buildctl-daemonless.sh`: the pipeline recipes'
//! exact commands, run by a shell through a link of that name, in the
//! three pod security modes, and the customisations (target, build args,
//! push, tar export, debug), compared with the real script where the
//! output is a file.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::spawn::*;
use common::*;

/// Recipes use the default state dirs; one build per user at a time.
static ROOT_STATE: Mutex<()> = Mutex::new(());
static USER_STATE: Mutex<()> = Mutex::new(());

/// The command every recipe runs (privileged and rootless recipes).
const RECIPE: &str = "buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --opt filename=Dockerfile \\
  --progress=plain";

/// The strict recipe sets the flag on the command as well as in the pod.
const STRICT_RECIPE: &str = "BUILDKITD_FLAGS=\"--oci-worker-no-process-sandbox\" \\
buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --opt filename=Dockerfile \\
  --progress=plain";

/// A step that fails unless its pid says whether the process sandbox (a
/// pid namespace of its own) is on. The state dirs persist between runs,
/// so each Dockerfile is unique and the step really runs.
fn sandbox_dockerfile(sandboxed: bool) -> String {
    let test = if sandboxed { "= 1" } else { "!= 1" };
    let nonce = nonce();
    format!(
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo pid=$$ run={nonce}; test $$ {test}\"]\n"
    )
}

/// Runs a recipe's shell text as `who`, with the link first on PATH.
fn recipe(who: As, text: &str, ctx: &Path, env: &[(&str, &str)]) -> Run {
    let link_dir = script_link()
        .parent()
        .expect("link dir")
        .display()
        .to_string();
    let path = format!("{link_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut all = vec![("PATH", path.as_str())];
    all.extend_from_slice(env);
    let mut cmd = command_of(Path::new("/bin/sh"), who, &["-c", text], ctx, &all);
    let out = cmd.output().expect("run the recipe");
    Run {
        cmd: format!("{who:?}: sh -c {text:?} {env:?}"),
        cwd: ctx.to_path_buf(),
        out,
    }
}

fn assert_step_done(run: &Run) {
    let err = run.stderr();
    assert!(err.contains("RUN [\"/bin/busybox\""), "{}", run.explain());
    assert!(err.contains("DONE"), "{}", run.explain());
}

#[test]
fn privileged_recipe_runs_unchanged() {
    let _state = ROOT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = user_context(&sandbox_dockerfile(true));
    let run = recipe(As::Root, RECIPE, ctx.path(), &[("BUILDKITD_FLAGS", "")]);
    run.assert_ok();
    assert_step_done(&run);
    assert!(run.stderr().contains("pid=1"), "{}", run.explain());
}

#[test]
fn rootless_recipe_runs_unchanged() {
    let _state = USER_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = user_context(&sandbox_dockerfile(true));
    let run = recipe(As::User, RECIPE, ctx.path(), &[("BUILDKITD_FLAGS", "")]);
    run.assert_ok();
    assert_step_done(&run);
    assert!(run.stderr().contains("pid=1"), "{}", run.explain());
    assert!(
        Path::new("/home/bkdtest/.local/share/buildkit/history.db").exists(),
        "the rootless cache volume path is the state dir"
    );
}

#[test]
fn strict_recipe_runs_unchanged_where_proc_is_masked() {
    let _state = USER_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = user_context(&sandbox_dockerfile(false));
    let run = recipe(
        As::UserMaskedProc,
        STRICT_RECIPE,
        ctx.path(),
        &[("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox")],
    );
    run.assert_ok();
    assert_step_done(&run);
    // The flag came from the recipe: no fallback warning is needed.
    assert!(!run.stderr().contains("warning:"), "{}", run.explain());
}

const STAGES: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\n\
    FROM base AS production\nARG NODE_ENV\nARG VERSION\n\
    RUN [\"/bin/busybox\",\"sh\",\"-c\",\"echo $NODE_ENV-$VERSION > /built\"]\n\
    FROM base AS broken\nRUN [\"/bin/busybox\",\"false\"]\n";

#[test]
fn customisations_target_build_args_push_and_tar() {
    let _state = ROOT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let registry = &bed().registry;
    let ctx = user_context(STAGES);
    let env = [("BUILDKITE_BUILD_NUMBER", "417")];

    // Target (the broken last stage is not built) and build args.
    let text = "buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --opt filename=Dockerfile \\
  --opt target=production \\
  --opt build-arg:NODE_ENV=production \\
  --opt build-arg:VERSION=$BUILDKITE_BUILD_NUMBER \\
  --progress=plain \\
  --output type=tar,dest=image.tar";
    let run = recipe(As::Root, text, ctx.path(), &env);
    run.assert_ok();
    let built = tar_file(&ctx.path().join("image.tar"), "built").expect("/built");
    assert_eq!(String::from_utf8_lossy(&built).trim(), "production-417");

    // Push, with the registry host of the test bed.
    let text = format!(
        "buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --opt target=production \\
  --output type=image,name={registry}/myimage:$BUILDKITE_BUILD_NUMBER,push=true"
    );
    let run = recipe(As::Root, &text, ctx.path(), &env);
    run.assert_ok();
    let (status, _) = manifest(registry, "myimage", "417");
    assert!(status.contains("200"), "{status}\n{}", run.explain());

    // Tar export, compared entry by entry with the real script's.
    let tar_recipe = "buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --opt target=production \\
  --output type=tar,dest=OUT";
    let ours = recipe(
        As::Root,
        &tar_recipe.replace("OUT", "bkd.tar"),
        ctx.path(),
        &env,
    );
    ours.assert_ok();
    let theirs = recipe(
        As::Root,
        &tar_recipe.replace("OUT", "script.tar").replace(
            "buildctl-daemonless.sh",
            "/usr/local/bin/buildctl-daemonless.sh",
        ),
        ctx.path(),
        &env,
    );
    theirs.assert_ok();
    let listing = |name: &str| {
        let mut l: Vec<_> = tar_listing(&ctx.path().join(name))
            .into_iter()
            .map(|e| format!("{e:?}"))
            .collect();
        l.sort();
        l
    };
    assert_eq!(listing("bkd.tar"), listing("script.tar"));
    assert!(listing("bkd.tar").iter().any(|e| e.contains("built")));
}

#[test]
fn debug_recipe_shows_the_daemon_log() {
    let _state = ROOT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = user_context(&sandbox_dockerfile(true));
    let text = "buildctl-daemonless.sh build \\
  --frontend dockerfile.v0 \\
  --local context=. \\
  --local dockerfile=. \\
  --progress=plain \\
  --debug";
    let run = recipe(As::Root, text, ctx.path(), &[]);
    run.assert_ok();
    let err = run.stderr();
    assert!(err.contains("buildkitd ready in"), "{}", run.explain());
    assert!(err.contains("buildkitd: time="), "{}", run.explain());
    assert_step_done(&run);
}

#[test]
fn bkd_daemonless_and_global_debug_before_build() {
    let _state = ROOT_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = user_context(&sandbox_dockerfile(true));
    let run = bkd_as(
        As::Root,
        &[
            "daemonless",
            "--debug",
            "build",
            "--frontend=dockerfile.v0",
            "-local",
            "context=.",
            "-local",
            "dockerfile=.",
            "--progress=plain",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    assert!(
        run.stderr().contains("buildkitd ready in"),
        "{}",
        run.explain()
    );
    assert_step_done(&run);
}

#[test]
fn connect_retries_bound_the_readiness_wait() {
    let ctx = user_context(&sandbox_dockerfile(true));
    write(
        ctx.path(),
        "silent-buildkitd",
        "#!/bin/sh\necho silent\nexec sleep 7392\n",
    );
    let fake = ctx.path().join("silent-buildkitd");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let started = std::time::Instant::now();
    let run = recipe(
        As::Root,
        RECIPE,
        ctx.path(),
        &[
            ("BUILDKITD", &fake.display().to_string()),
            ("BUILDCTL_CONNECT_RETRIES_MAX", "0"),
        ],
    );
    remove_kept_log(&run.stderr());
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    // 0 retries: one 100 ms sleep and two calls in the script.
    assert!(
        run.stderr().contains("did not become ready within 0.2s"),
        "{}",
        run.explain()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let clean = wait_for(std::time::Duration::from_secs(3), || {
        processes_matching("sleep 7392").is_empty()
    });
    assert!(clean, "{:?}", processes_matching("sleep 7392"));
}

#[test]
fn unsupported_buildctl_input_is_one_clear_line() {
    let ctx = user_context(&sandbox_dockerfile(true));
    for (text, code, needle) in [
        (
            "buildctl-daemonless.sh du",
            2,
            "buildctl command \"du\" is not supported",
        ),
        (
            "buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=. --local dockerfile=. --trace t.json",
            2,
            "--trace is not supported",
        ),
        (
            "buildctl-daemonless.sh build --frontend docker --local context=.",
            2,
            "unsupported --frontend \"docker\"",
        ),
        (
            "buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=./nope --local dockerfile=.",
            3,
            "--local context=./nope",
        ),
        (
            "buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=. --local dockerfile=. --opt filename=Missing.Dockerfile",
            3,
            "Missing.Dockerfile",
        ),
        (
            "buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=. --export-cache type=registry",
            2,
            "needs ref=",
        ),
    ] {
        let run = recipe(As::Root, text, ctx.path(), &[]);
        assert_eq!(run.code(), Some(code), "{}", run.explain());
        let err = run.stderr();
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{}", run.explain());
        assert!(errors[0].contains(needle), "{}", run.explain());
    }
}
