//! `signet completions SHELL` and `signet man`: shell completion scripts and the manual page,
//! generated from the command line's own definition (the Debian package ships both).

use std::io::Write;

/// Write the completion script for `shell` of the command `cmd` to standard output.
pub(crate) fn completions(
    mut cmd: clap::Command,
    shell: clap_complete::Shell,
) -> Result<(), String> {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    std::io::stdout().write_all(&out).map_err(|e| e.to_string())
}

/// Write the manual page (roff) of `cmd` to standard output: synopsis, options and the list
/// of subcommands (each explained further by `signet SUBCOMMAND --help`).
pub(crate) fn man(cmd: clap::Command) -> Result<(), String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| e.to_string())?;
    std::io::stdout().write_all(&out).map_err(|e| e.to_string())
}
