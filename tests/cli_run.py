"""``tf-boneage ARGS`` in the test process, through ``cli.main`` (the same argument parsing; a
SavedModel already loaded in this process is reused): returncode, stdout and stderr as a
subprocess would give them, argparse's exit included."""

import contextlib
import io
import types


def run_cli(*args):
    from tf_boneage import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
