"""One error family in practice: every error tinygpt raises for bad input or a bad file is a
`tinygpt.errors.TinyGPTError` (the CLI prints those as one line, exit 2), so no `raise` in
src/tinygpt may raise a bare built-in exception class, and no exception class tinygpt defines may
derive from built-ins alone. The few exceptions are listed below, each with the reason it is not
bad input. A failure lists file:line for every offender."""
import ast
import builtins
import pathlib

import tinygpt

# the package under test: the source tree, or in CI's wheel pass the installed copy (same files)
SRC = pathlib.Path(tinygpt.__file__).parent

BUILTIN_ERRORS = {name for name, obj in vars(builtins).items()
                  if isinstance(obj, type) and issubclass(obj, BaseException)}

# Raised anywhere: these never describe bad input.
ALLOWED_EVERYWHERE = {
    "NotImplementedError",  # abstract methods (Function.forward, Optimizer.step): a subclass's duty
    "AssertionError",       # tinygpt.testing's comparisons fail as assertions, as pytest expects
}
# (file under src/tinygpt, enclosing function or "<module>", class): why it is not bad input.
ALLOWED_SITES = {
    # Python's protocol for a module attribute that does not exist is AttributeError
    ("__init__.py", "__getattr__", "AttributeError"),
    # caught two lines below, in the same function: control flow, never leaves masked_fill
    ("ops/elementwise.py", "masked_fill", "ValueError"),
    # a Function whose backward returns a gradient of the wrong shape is a bug in that Function
    ("core/autograd.py", "backward", "RuntimeError"),
}
# kernels/ is the leaf below everything (NumPy and Numba only, it imports nothing from tinygpt):
# its checks guard calls from ops/ and nn/, which validate the user's input before it gets here.
# TINYGPT_KERNELS is read while tinygpt is imported, before any command could catch an error.
ALLOWED_PACKAGES = ("kernels/",)
# Exception classes tinygpt defines on built-ins alone, on purpose.
ALLOWED_CLASSES = {
    ("train/signals.py", "Interrupted"),  # SIGTERM as a KeyboardInterrupt: stops like Ctrl-C
    ("data/download.py", "_Interrupted"),  # private signal inside the downloader, never escapes
}


def _files():
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _raised_names(exc):
    """The class names a `raise` expression may raise (both arms of `A(...) if c else B(...)`)."""
    if isinstance(exc, ast.IfExp):
        return _raised_names(exc.body) + _raised_names(exc.orelse)
    if isinstance(exc, ast.Call):
        exc = exc.func
    return [exc.id] if isinstance(exc, ast.Name) else []


def _functions(tree):
    """{raise node: name of the innermost enclosing function} for every raise in `tree`."""
    owner = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            if isinstance(child, ast.Raise):
                owner[child] = name
            visit(child, inner)
    visit(tree, "<module>")
    return owner


def bare_builtin_raises():
    """['file:line: raise Class (in function)'] for every raise of a built-in not allowed above."""
    found = []
    for path in _files():
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(ALLOWED_PACKAGES):
            continue
        tree = ast.parse(path.read_text(), str(path))
        local_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                       and isinstance(n.ctx, ast.Store)}  # `err = ...; raise err` re-raises
        for node, function in _functions(tree).items():
            if node.exc is None:  # a bare `raise` re-raises what was caught
                continue
            for name in _raised_names(node.exc):
                if (name in BUILTIN_ERRORS and name not in local_names
                        and name not in ALLOWED_EVERYWHERE
                        and (rel, function, name) not in ALLOWED_SITES):
                    found.append(f"src/tinygpt/{rel}:{node.lineno}: raise {name} (in {function})")
    return found


def builtin_only_error_classes():
    """['file:line: class X(Builtin)'] for exception classes outside the TinyGPTError family."""
    found = []
    for path in _files():
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef) or not node.bases:
                continue
            bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
            if all(b in BUILTIN_ERRORS for b in bases) and (rel, node.name) not in ALLOWED_CLASSES:
                if not (rel == "errors.py" and node.name == "TinyGPTError"):
                    found.append(f"src/tinygpt/{rel}:{node.lineno}: class {node.name}({', '.join(bases)})")
    return found


def test_no_bare_builtin_exception_is_raised():
    found = bare_builtin_raises()
    assert not found, ("raise a tinygpt.errors class instead (it may also derive from the built-in, "
                       "as InputIndexError does):\n" + "\n".join(found))


def test_every_error_class_is_in_the_family():
    found = builtin_only_error_classes()
    assert not found, "derive these from tinygpt.errors.TinyGPTError:\n" + "\n".join(found)


def test_the_checks_see_what_they_must(tmp_path, monkeypatch):
    """The walker flags a bare raise and a built-in-only class, and passes the allowed forms."""
    pkg = tmp_path / "tinygpt"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "class Oops(ValueError):\n    pass\n\n"
        "def f(x):\n"
        "    if x:\n        raise FileNotFoundError(x)\n"
        "    raise (KeyError(x) if x else InputError(x))\n")
    (pkg / "fine.py").write_text(
        "def g(x):\n"
        "    try:\n        x()\n    except OSError as err:\n        raise err\n"
        "    raise NotImplementedError\n")
    monkeypatch.setitem(globals(), "SRC", pkg)
    assert bare_builtin_raises() == ["src/tinygpt/bad.py:6: raise FileNotFoundError (in f)",
                                     "src/tinygpt/bad.py:7: raise KeyError (in f)"]
    assert builtin_only_error_classes() == ["src/tinygpt/bad.py:1: class Oops(ValueError)"]


def test_new_error_classes_refine_their_builtins():
    from tinygpt import errors
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.ServiceError, ConnectionError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    assert issubclass(errors.StateError, RuntimeError)
    for cls in (errors.MissingFileError, errors.ServiceError, errors.MissingDependencyError,
                errors.StateError):
        assert issubclass(cls, errors.TinyGPTError)
        assert str(cls("file x does not exist")) == "file x does not exist"
