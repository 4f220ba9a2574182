"""The author's workspace: where config, issues, templates, subscribers and state live."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

    from newsletter.subscribers import SubscriberStore

from newsletter.config import Config, load_config
from newsletter.errors import ConfigError, NewsletterError

PACKAGE_DIR = Path(__file__).resolve().parent
SKELETON_DIR = PACKAGE_DIR / "skeleton"
CONFIG_NAME = "newsletter.toml"
STATE_NAME = "state"


def default_templates_dir() -> Path:
    """The templates shipped with the tool: inside the wheel, or at the repo root in a checkout."""
    bundled = PACKAGE_DIR / "templates"
    return bundled if bundled.is_dir() else PACKAGE_DIR.parent / "templates"


@dataclass
class Workspace:
    root: Path
    _secret: bytes | None = field(default=None, repr=False)

    @cached_property
    def config(self) -> Config:
        return load_config(self.root / CONFIG_NAME)

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def subscribers_path(self) -> Path:
        return self.root / "subscribers" / "subscribers.toml"

    def store(self) -> SubscriberStore:
        """The subscriber file with its change log (state/changes.sqlite) in front: see newsletter.changes."""
        from newsletter.changes import ChangeLog
        from newsletter.subscribers import SubscriberStore

        return SubscriberStore(self.subscribers_path, ChangeLog(self.state_dir / "changes.sqlite"))

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_NAME

    @property
    def build_dir(self) -> Path:
        return self.state_dir / "build"

    @property
    def cache_dir(self) -> Path:
        """What is expensive to compute and safe to lose (CSS inlined by premailer, see render.py)."""
        return self.state_dir / "cache"

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    @property
    def secret_path(self) -> Path:
        return self.state_dir / "secret"

    @cached_property
    def templates(self) -> jinja2.Environment:
        """Templates from the workspace first, then the shipped defaults for anything missing."""
        import jinja2  # only where a template is rendered
        loader = jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(self.templates_dir),
            jinja2.FileSystemLoader(default_templates_dir()),
        ])
        class Compiled(jinja2.FileSystemBytecodeCache):
            """Jinja2's own cache of compiled templates; one it cannot write is no error."""

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                with contextlib.suppress(OSError):
                    super().dump_bytecode(bucket)

        compiled = self.cache_dir / "templates"  # compiling them anew took 0.08 s of every render
        try:
            compiled.mkdir(parents=True, exist_ok=True)
            bytecode_cache: jinja2.BytecodeCache | None = Compiled(str(compiled))
        except OSError:
            bytecode_cache = None
        return jinja2.Environment(
            loader=loader,
            autoescape=jinja2.select_autoescape(["html", "mjml", "xml"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            bytecode_cache=bytecode_cache,
        )

    def template_source(self, name: str) -> str:
        """The raw text of a template (workspace copy or shipped default)."""
        for folder in (self.templates_dir, default_templates_dir()):
            if (folder / name).is_file():
                return (folder / name).read_text(encoding="utf-8")
        raise NewsletterError(f"Vorlage {name} nicht gefunden (weder in templates/ noch im Programm)")

    def secret(self) -> bytes:
        """The key for unsubscribe and confirmation tokens, created on first use (mode 0600).

        NEWSLETTER_SECRET replaces the file, e.g. on a server that keeps no state folder.
        Losing the secret invalidates the links in mails already sent, so it is never rotated silently.
        """
        if self._secret is None:
            env = os.environ.get("NEWSLETTER_SECRET", "")
            if env:
                self._secret = env.encode()
            else:
                self._secret = ensure_secret(self.secret_path)
        return self._secret

    def resolve_issue(self, name: str | Path) -> Path:
        """Find an issue by path, by file name in issues/, or by name without .md.

        It must lie inside this workspace: an issue is sent to the workspace's own list, so a
        file from another folder (say, with NEWSLETTER_WORKSPACE pointing elsewhere) is refused.
        """
        given = Path(name).expanduser()
        candidates = [given] if given.is_absolute() else [
            self.root / given, Path.cwd() / given, self.issues_dir / given.name, self.issues_dir / f"{given.name}.md"]
        for candidate in candidates:
            if candidate.is_file():
                found = candidate.resolve()
                if not found.is_relative_to(self.root):
                    raise NewsletterError(f"{name}: liegt nicht im Arbeitsbereich {self.root}; "
                                          "dort liegen die Ausgaben für dessen Abonnent:innen")
                return found
        raise NewsletterError(f"{name}: Ausgabe nicht gefunden (gesucht in {self.issues_dir})")


def find_workspace(explicit: Path | None = None) -> Workspace:
    """The workspace: --workspace / NEWSLETTER_WORKSPACE if given, else the current directory."""
    root = (explicit or Path.cwd()).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: Arbeitsbereich nicht gefunden")
    if not (root / CONFIG_NAME).is_file():  # never create a subscriber file in a random folder
        raise ConfigError(f"{root / CONFIG_NAME}: nicht gefunden. Ist das der richtige Ordner? "
                          "(`newsletter init` legt einen neuen Arbeitsbereich an)")
    return Workspace(root)


def ensure_secret(path: Path) -> bytes:
    """Read the secret file, or create it with 32 random bytes, readable only by its owner."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process was faster: use its secret
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value


@dataclass
class InitResult:
    created: list[Path]
    kept: list[Path]


def init_workspace(root: Path) -> InitResult:
    """Create a workspace; existing files are kept as they are, never overwritten."""
    result = InitResult(created=[], kept=[])
    root.mkdir(parents=True, exist_ok=True)

    def place(target: Path, source: Path) -> None:
        if target.exists():
            result.kept.append(target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        result.created.append(target)

    place(root / CONFIG_NAME, SKELETON_DIR / "newsletter.toml")
    place(root / ".gitignore", SKELETON_DIR / "gitignore")
    for folder in ("issues", "subscribers"):
        (root / folder).mkdir(exist_ok=True)
    defaults = default_templates_dir()
    for source in sorted(defaults.rglob("*")):
        if source.is_file():
            place(root / "templates" / source.relative_to(defaults), source)
    secret = root / STATE_NAME / "secret"
    if secret.exists():
        result.kept.append(secret)
    else:
        ensure_secret(secret)
        result.created.append(secret)
    return result
