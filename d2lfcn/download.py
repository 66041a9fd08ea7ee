"""Download files resumably with a checksum, and extract tar archives safely.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

from .utils import UserError

__all__ = ['download', 'file_sha1', 'check_sha1', 'safe_extract']

_CHUNK = 1 << 20


def file_sha1(path):
    """Return the hex sha1 digest of the file at `path`, read in chunks."""
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def check_sha1(path, sha1):
    """Return True if the file at `path` has the hex sha1 digest `sha1`."""
    return file_sha1(path) == sha1.lower()


def _progress(total, initial, name):
    """Return a tqdm bar on a terminal, a silent stand-in otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; stay usable without it anyway
        tqdm = None
    # disable=None: tqdm shows the bar only when stderr is a terminal (no CI log spam).
    if tqdm is None:
        class _Silent:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Silent()
    return tqdm(total=total, initial=initial, unit='B', unit_scale=True,
                unit_divisor=1024, desc=name, disable=None, file=sys.stderr)


def _fetch_once(url, part, timeout):
    """Append the rest of `url` to `part`, asking the server to skip what is there.

    Returns True when the server says the file is complete (nothing left to send).
    """
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={'User-Agent': 'd2lfcn'})
    if have:
        request.add_header('Range', f'bytes={have}-')
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past `have`: the part is whole
            return True
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get('Content-Length')
        total = have + int(length) if length is not None else None
        bar = _progress(total, have, os.path.basename(part)[:-len('.part')])
        try:
            with open(part, 'ab' if have else 'wb') as f:
                for chunk in iter(lambda: response.read(_CHUNK), b''):
                    f.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if total is not None and os.path.getsize(part) < total:
            raise ConnectionError(f'connection closed after {os.path.getsize(part)} '
                                  f'of {total} bytes')
    return True


def _try_url(url, part, retries, timeout, errors):
    """Fetch `url` into `part`, retrying while each attempt makes progress."""
    for _ in range(retries):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            _fetch_once(url, part, timeout)
            return True
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            errors.append(f'{url}: {getattr(e, "reason", None) or e}')
            grew = os.path.exists(part) and os.path.getsize(part) > have
            if isinstance(e, urllib.error.HTTPError) or not grew:
                return False  # a refusal or a dead host: try the next URL
    return False


def download(urls, path, sha1=None, retries=3, timeout=60):
    """Download the first of `urls` that works to `path`, verified by `sha1`.

    An existing `path` with the right sha1 is returned without network access.
    The bytes arrive in `path + '.part'`; an interrupted transfer (within this
    call or from an earlier one) resumes from there with an HTTP Range request.
    A sha1 mismatch deletes the file and raises `UserError`, as does a network
    failure on every URL (the `.part` file is kept for the next try).

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if os.path.exists(path) and (sha1 is None or check_sha1(path, sha1)):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + '.part'
    errors = []
    for url in urls:
        sys.stderr.write(f'downloading {url} to {path}\n')
        if not _try_url(url, part, retries, timeout, errors):
            continue
        if sha1 is not None and not check_sha1(part, sha1):
            os.remove(part)
            raise UserError(f'{path}: downloaded from {url} but its sha1 is not {sha1}; '
                            'deleted it, run again to download it afresh')
        os.replace(part, path)
        return path
    raise UserError(f'cannot download {os.path.basename(path)} ({errors[-1]}); '
                    'check the network, or pass --data-dir to a folder that already '
                    'holds the data, or use --demo')


def _inside(root, path):
    """Return True if `path` is `root` or lies below it (both absolute, normalised)."""
    return path == root or path.startswith(root + os.sep)


def _check_member(member, root, tar_path):
    """Raise `UserError` if extracting `member` under `root` could escape `root`."""
    def refuse(why):
        raise UserError(f'{tar_path}: refusing to extract member {member.name!r} ({why}); '
                        'the archive is damaged or hostile, delete it')
    name = member.name
    if os.path.isabs(name) or name.startswith(('/', '\\')):
        refuse('absolute path')
    if '..' in name.replace('\\', '/').split('/'):
        refuse("'..' in path")
    dest = os.path.normpath(os.path.join(root, name))
    if not _inside(root, dest):
        refuse('lands outside the target folder')
    if member.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(dest), member.linkname))
        if os.path.isabs(member.linkname) or not _inside(root, target):
            refuse(f'symlink to {member.linkname!r} outside the target folder')
    elif member.islnk():
        target = os.path.normpath(os.path.join(root, member.linkname))
        if os.path.isabs(member.linkname) or not _inside(root, target):
            refuse(f'hard link to {member.linkname!r} outside the target folder')
    elif not (member.isfile() or member.isdir()):
        refuse('device or fifo')


def safe_extract(tar_path, target, member_root=None):
    """Extract the tar at `tar_path` so that its `member_root` folder becomes `target`.

    Every member is checked before anything is written: absolute paths, '..'
    and links leading outside raise `UserError`. Extraction happens in a
    temporary folder next to `target`, which is renamed into place only when
    complete, so an interrupted extraction never leaves a `target` behind.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.extract', dir=parent)
    root = os.path.realpath(tmp)
    try:
        try:
            with tarfile.open(tar_path) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, root, tar_path)
                for member in members:
                    # Symlinks are created as we go; re-check the real path of each
                    # destination so a chain of inside-looking links can't escape.
                    real = os.path.realpath(os.path.join(root, member.name))
                    if not _inside(root, real):
                        raise UserError(f'{tar_path}: refusing to extract member '
                                        f'{member.name!r} (reaches outside through a '
                                        'link); delete the archive')
                    if hasattr(tarfile, 'data_filter'):  # Python >= 3.8.17/3.11.4
                        tar.extract(member, root, filter='data')
                    else:
                        tar.extract(member, root)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserError(f'{tar_path}: cannot extract ({e}); delete it and '
                            'download it again') from None
        src = os.path.join(root, member_root) if member_root else root
        if not os.path.isdir(src):
            raise UserError(f'{tar_path}: has no folder {member_root!r}; '
                            'it is not the expected archive, delete it')
        try:
            os.replace(src, target)
        except OSError:
            if not os.path.isdir(target):  # else another process finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
