//! `--call outline` of a Dockerfile: build args with defaults and the
//! comments above them, the target, the secrets and SSH agents it mounts.

mod common;

use kiln_dockerfile::outline;
use kiln_frontend::Options;
use kiln_frontend::outline::Use;

const SRC: &str = "# syntax=docker/dockerfile:1
# The Go toolchain's version.
ARG GO_VERSION=1.22
ARG REVISION

# Builds the binary.
FROM golang:${GO_VERSION} AS build
RUN --mount=type=secret,id=netrc,required --mount=type=ssh \\
    --mount=type=ssh,id=deploy,required go build
# The shipped image.
FROM scratch AS app
COPY --from=build /out /app
";

#[test]
fn lists_args_target_secrets_and_ssh() {
    let o = outline("Dockerfile", SRC, &Options::default(), &common::DebianLike);
    assert_eq!(o.name.as_deref(), Some("app"));
    assert_eq!(o.description.as_deref(), Some("The shipped image."));
    let args: Vec<_> = o
        .args
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.value.as_deref(),
                a.description.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        args,
        vec![
            (
                "GO_VERSION",
                Some("1.22"),
                Some("The Go toolchain's version.")
            ),
            ("REVISION", None, None),
        ]
    );
    assert_eq!(
        o.ssh,
        vec![
            Use {
                id: "default".into(),
                required: false
            },
            Use {
                id: "deploy".into(),
                required: true
            }
        ]
    );
    assert_eq!(o.secrets.len(), 1);
    let j = o.to_json(SRC);
    assert_eq!(j["args"][0]["location"]["ranges"][0]["start"]["line"], 3);
    assert!(o.to_text().contains("SSH       REQUIRED\n"));

    let build = Options {
        target: Some("build".into()),
        ..Options::default()
    };
    let o = outline("Dockerfile", SRC, &build, &common::DebianLike);
    assert_eq!(o.description.as_deref(), Some("Builds the binary."));
}
