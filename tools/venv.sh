#!/bin/sh
# The Makefile's virtualenv keeper: `tools/venv.sh ensure PYTHON VENV` makes VENV with PYTHON
# when it does not exist, and refuses (exit 1, saying what to do) a VENV that exists but was
# not made here or no longer runs: make never installs into a folder it did not make.
# `tools/venv.sh remove VENV` deletes VENV only if make made it.
set -eu
MARK=.made-by-jaxmetric-make

case "${1:-}" in
ensure)
    python=$2 venv=$3
    if [ -e "$venv" ] || [ -L "$venv" ]; then
        if [ -f "$venv/$MARK" ]; then
            if "$venv/bin/python" -c "import sys" >/dev/null 2>&1; then
                exit 0
            fi
            echo "error: $venv was made by make, but $venv/bin/python no longer runs (was its interpreter removed or moved?)." >&2
            echo "       Delete it and run again: make clean VENV=$venv   (or: rm -rf $venv)" >&2
            exit 1
        fi
        if [ -L "$venv" ]; then what="a symbolic link to $(readlink "$venv")"
        elif [ -f "$venv/pyvenv.cfg" ]; then what="a virtualenv that make did not make"
        else what="not a virtualenv made by make"; fi
        echo "error: $venv exists but is $what; make installs only into a virtualenv it made itself." >&2
        echo "       Move it away or delete it (rm -rf $venv), or use another folder: make <target> VENV=.venv-other" >&2
        exit 1
    fi
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: the interpreter '$python' was not found; install Python >= 3.11 or name one: make <target> PYTHON=python3.12" >&2
        exit 1
    fi
    if ! version=$("$python" -c "import platform; print(platform.python_version())" 2>/dev/null); then
        echo "error: '$python' was found ($(command -v "$python")) but does not run; name a working Python >= 3.11: make <target> PYTHON=python3.12" >&2
        case "$(command -v "$python")" in
        */shims/*) echo "       It is a pyenv shim: select an installed version for it, e.g. PYENV_VERSION=\$(pyenv version-name):3.12.1 make <target> PYTHON=$python" >&2 ;;
        esac
        exit 1
    fi
    if ! "$python" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
        echo "error: jaxmetric needs Python >= 3.11; '$python' is $version. Name another: make <target> PYTHON=python3.12" >&2
        exit 1
    fi
    echo "making the virtualenv $venv with $python ($version)"
    "$python" -m venv "$venv"
    touch "$venv/$MARK"
    "$venv/bin/python" -m pip install -q --upgrade pip
    ;;
remove)
    venv=$2
    if [ -f "$venv/$MARK" ]; then rm -rf "$venv"
    elif [ -e "$venv" ] || [ -L "$venv" ]; then echo "not removing $venv: make did not make it" >&2
    fi
    ;;
*)
    echo "usage: tools/venv.sh ensure PYTHON VENV | remove VENV" >&2
    exit 2
    ;;
esac
