//! Every shell block in README.md and in every page under docs/ runs as
//! written in bash and in zsh (macOS's default shell): no syntax errors, no glob that zsh refuses
//! (`?v={}`), no parenthesis bash cannot parse (`%(id)s`), and no comments,
//! which an interactive zsh without `interactivecomments` would pass to the
//! command as arguments.
//!
//! Each block is checked with `-n`, then run for real with an empty PATH in
//! an empty directory and a handler for unknown commands that does nothing:
//! so every word is expanded as the shell would expand it (that is where
//! zsh's `no matches found` happens) and no program runs. Any message on
//! stderr fails the test, apart from "no such file" for the repository's
//! own scripts, which the empty directory does not have.

use std::path::Path;
use std::process::Command;

use forloop_tests::scratch;

const SHELLS: [(&str, &str); 2] = [
    ("bash", "command_not_found_handle() { return 0; }\n"),
    ("zsh", "command_not_found_handler() { return 0; }\n"),
];

/// A page's shell blocks: (first line number, text).
fn shell_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in readme.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                let info = line.trim_start().trim_start_matches('`').trim();
                if ["sh", "bash", "shell", "zsh", "console"].contains(&info) {
                    current = Some((index + 2, String::new()));
                }
            }
            (Some(_), true) => blocks.push(current.take().expect("open block")),
            (Some((_, text)), false) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(current.is_none(), "the page ends inside a code block");
    blocks
}

/// Whether `line` has a `#` that starts a word outside quotes.
fn has_comment(line: &str) -> bool {
    let (mut single, mut double, mut word_start, mut escaped) = (false, false, true, false);
    for c in line.chars() {
        if escaped {
            escaped = false;
            word_start = false;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && word_start => return true,
            _ => {}
        }
        word_start = !single && !double && (c.is_whitespace() || c == ';');
    }
    false
}

/// `program` by its full path: the checks run it with an empty PATH.
fn shell(program: &str) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("cannot find {program}: install it with `apt-get install {program}` (scripts/test does)")
        });
    let mut command = Command::new(found);
    command.env_clear().env("HOME", std::env::temp_dir());
    command
}

fn check(program: &str, handler: &str, line: usize, block: &str, empty: &Path) -> Vec<String> {
    check_in("README", program, handler, line, block, empty)
}

/// `check` for a block of `page` (named in the messages).
fn check_in(
    page: &str,
    program: &str,
    handler: &str,
    line: usize,
    block: &str,
    empty: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let missing = |e: std::io::Error| -> ! {
        panic!(
            "cannot run {program} ({e}): install it with `apt-get install {program}` (scripts/test does)"
        )
    };
    let syntax = shell(program)
        .args(["-n", "-c", block])
        .output()
        .unwrap_or_else(|e| missing(e));
    if !syntax.status.success() || !syntax.stderr.is_empty() {
        problems.push(format!(
            "{page} line {line}: `{program} -n` says: {}",
            String::from_utf8_lossy(&syntax.stderr).trim()
        ));
        return problems;
    }
    let run = shell(program)
        .current_dir(empty)
        .env("PATH", empty)
        .args(["-c", &format!("{handler}{block}")])
        .output()
        .unwrap_or_else(|e| missing(e));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.to_ascii_lowercase().contains("no such file or directory"))
        .collect();
    if !complaints.is_empty() {
        problems.push(format!(
            "{page} line {line}: {program} says: {}",
            complaints.join("; ")
        ));
    }
    problems
}

/// README.md and every `.md` under docs/, relative to `root`, sorted.
fn pages(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut found = vec!["README.md".to_owned()];
    walk(root, &root.join("docs"), &mut found);
    found[1..].sort();
    found
}

/// Every problem of every shell block of `page` (a path under `root`), and
/// how many blocks it has.
fn check_page(root: &Path, page: &str, empty: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(root.join(page)).unwrap();
    let blocks = shell_blocks(&text);
    let mut problems = Vec::new();
    for (line, block) in &blocks {
        for (offset, text) in block.lines().enumerate() {
            if has_comment(text) {
                problems.push(format!(
                    "{page} line {}: a comment in a shell block (zsh without interactivecomments passes it as arguments): {text}",
                    line + offset
                ));
            }
        }
        for (program, handler) in SHELLS {
            problems.extend(check_in(page, program, handler, *line, block, empty));
        }
    }
    (blocks.len(), problems)
}

#[test]
fn every_readme_shell_block_runs_as_written_in_bash_and_zsh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let pages = pages(root);
    assert!(pages.len() >= 5, "found only these pages: {pages:?}");
    let empty = scratch("readme-shell");
    let mut problems = Vec::new();
    let mut blocks = 0;
    for page in &pages {
        let (count, found) = check_page(root, page, &empty);
        if page == "README.md" {
            assert!(count >= 5, "found only {count} shell blocks in README.md");
        }
        blocks += count;
        problems.extend(found);
    }
    assert!(blocks >= 10, "found only {blocks} shell blocks");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_broken_block_in_any_docs_page_fails_the_check() {
    let root = scratch("readme-pages");
    std::fs::create_dir_all(root.join("docs/design")).unwrap();
    std::fs::write(root.join("README.md"), "# x\n\n```sh\necho fine\n```\n").unwrap();
    std::fs::write(
        root.join("docs/design/deep.md"),
        "# y\n\n```sh\nrunner run ids.txt -- yt-dlp -o /tmp/%(id)s.mp4 x\n```\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/page.md"),
        "# z\n\n```console\nrunner wait    # progress\n```\n",
    )
    .unwrap();
    std::fs::write(root.join("docs/notes.txt"), "```sh\n(\n```\n").unwrap();
    let pages = pages(&root);
    assert_eq!(pages, ["README.md", "docs/design/deep.md", "docs/page.md"]);
    let empty = scratch("readme-pages-run");
    assert!(check_page(&root, "README.md", &empty).1.is_empty());
    let (count, deep) = check_page(&root, "docs/design/deep.md", &empty);
    assert_eq!(count, 1);
    assert!(
        deep.iter()
            .any(|p| p.starts_with("docs/design/deep.md line 4:") && p.contains("bash")),
        "{deep:?}"
    );
    let (_, page) = check_page(&root, "docs/page.md", &empty);
    assert!(
        page.iter()
            .any(|p| p.starts_with("docs/page.md line 4: a comment")),
        "{page:?}"
    );
}

#[test]
fn the_check_catches_what_the_issue_found() {
    let empty = scratch("readme-shell-bad");
    let glob = "runner run items.txt -- echo https://youtube.com/watch?v={}\n";
    assert!(!check("zsh", SHELLS[1].1, 1, glob, &empty).is_empty());
    assert!(check("bash", SHELLS[0].1, 1, glob, &empty).is_empty());
    let parens = "runner run ids.txt -- yt-dlp -o /tmp/%(id)s.mp4 x\n";
    assert!(!check("bash", SHELLS[0].1, 1, parens, &empty).is_empty());
    assert!(has_comment("runner wait    # progress"));
    assert!(has_comment("# Redis"));
    assert!(!has_comment("env $(grep -v '^#' f)"));
    assert!(!has_comment("echo a#b \"# x\""));
}
