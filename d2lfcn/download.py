"""Download files resumably with a checksum, and extract tar archives safely.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import contextlib
import errno
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .utils import Arg, UserError, first_line, topmost_missing

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


class _DiskError(Exception):
    """Writing the download failed on this machine, not on the network."""


def _write_all(f, data):
    """Write `data` to the unbuffered file `f`; a full disk raises `_DiskError` here."""
    view = memoryview(data)
    try:
        while view:
            view = view[f.write(view):]  # a nearly full disk may take only a part
    except OSError as e:
        raise _DiskError(e) from None


def _fetch_once(url, f, timeout):
    """Append the rest of `url` to the open file `f`, asking the server to skip what is there."""
    have = f.seek(0, os.SEEK_END)
    request = urllib.request.Request(url, headers={'User-Agent': 'd2lfcn'})
    if have:
        request.add_header('Range', f'bytes={have}-')
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past `have`: the part is whole
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get('Content-Length')
        if length is not None and not length.strip().isdigit():
            raise http.client.HTTPException(f'the server sent Content-Length {length!r}, '
                                            'not a number of bytes')
        total = have + int(length) if length is not None else None
        bar = _progress(total, have, os.path.basename(f.name)[:-len('.part')])
        try:
            if os.fstat(f.fileno()).st_size != have:  # starting over: drop the old bytes
                try:
                    f.truncate(have)
                except OSError as e:
                    raise _DiskError(e) from None
            for chunk in iter(lambda: response.read(_CHUNK), b''):
                _write_all(f, chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        if total is not None and f.tell() < total:
            raise ConnectionError(f'connection closed after {f.tell()} of {total} bytes')


def _try_url(url, f, retries, timeout, errors):
    """Fetch `url` into `f`, retrying while each attempt makes progress."""
    for _ in range(retries):
        have = f.seek(0, os.SEEK_END)
        try:
            _fetch_once(url, f, timeout)
            return True
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            errors.append(f'{url}: {first_line(e)}')
            grew = f.seek(0, os.SEEK_END) > have
            if isinstance(e, urllib.error.HTTPError) or not grew:
                return False  # a refusal or a dead host: try the next URL
    return False


def _lock(f, part):
    """Lock the open `.part` file `f` for this process, or say who holds it."""
    if fcntl is None:  # Windows: no advisory locks; concurrent downloads are on the user
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f'{part}: another download into this file is running (it holds '
                        'a lock on it); wait for it to finish, or stop it and run '
                        'again') from None


def download(urls, path, sha1=None, retries=3, timeout=60):
    """Download the first of `urls` that works to `path`, verified by `sha1`.

    An existing `path` with the right sha1 is returned without network access.
    The bytes arrive in `path + '.part'`, locked while this call writes it (a
    second download into the same path stops with `UserError`); an
    interrupted transfer (within this call or from an earlier one) resumes
    from there with an HTTP Range request. A sha1 mismatch deletes the file
    and raises `UserError`, as does a network failure on every URL or a full
    disk (the `.part` file is kept for the next try).

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if os.path.exists(path) and (sha1 is None or check_sha1(path, sha1)):
        return path
    part = path + '.part'
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        f = open(part, 'ab', buffering=0)  # unbuffered: a full disk fails in write()
    except OSError as e:
        raise UserError(f'{part}: cannot write the download ({e.strerror}); pass '
                        '{data_dir} to a folder that already holds the data, or set '
                        '$D2LFCN_DATA to a writable folder', data_dir=Arg('data_dir')) from None
    with f:
        _lock(f, part)
        try:
            if os.path.exists(path) and (sha1 is None or check_sha1(path, sha1)):
                return path  # another download finished while we opened `part`
            return _download_locked(urls, path, part, f, sha1, retries, timeout)
        finally:
            if os.path.exists(part) and not os.path.getsize(part):
                os.remove(part)  # nothing arrived: leave no empty file behind


def _download_locked(urls, path, part, f, sha1, retries, timeout):
    """Download into the locked, open `part`; rename it to `path` when verified."""
    errors = []
    for url in urls:
        print(f'downloading {url} to {path}', flush=True)
        try:
            ok = _try_url(url, f, retries, timeout, errors)
        except _DiskError as e:
            err = e.args[0]
            why = 'disk full' if err.errno == errno.ENOSPC else err.strerror
            size = os.fstat(f.fileno()).st_size
            raise UserError(f'{part}: {why} after {size} bytes from {url}; kept them: '
                            'free some space and run again to resume') from None
        if not ok:
            continue
        if sha1 is not None and not check_sha1(part, sha1):
            os.remove(part)
            raise UserError(f'{path}: downloaded from {url} but its sha1 is not {sha1}; '
                            'deleted it, run again to download it afresh')
        os.replace(part, path)  # still locked: a later download finds `path` whole
        return path
    raise UserError(f'cannot download {os.path.basename(path)} ({errors[-1]}); '
                    'check the network, or pass {data_dir} to a folder that already '
                    'holds the data, or use {demo}', data_dir=Arg('data_dir'),
                    demo=Arg('demo', True))


def _inside(root, path):
    """Return True if `path` is `root` or lies below it (both absolute, normalised)."""
    return path == root or path.startswith(root + os.sep)


def _parts(name):
    return [p for p in name.replace('\\', '/').split('/') if p not in ('', '.')]


def _resolve(parts, symlinks):
    """Return archive path `parts` with the archive's own `symlinks` followed, as the
    file system would after extraction into an empty folder, or None if it leaves it."""
    out, todo, hops = [], list(parts), 0
    while todo:
        part = todo.pop(0)
        if part == '..':
            if not out:
                return None  # above the extraction folder
            out.pop()
            continue
        out.append(part)
        target = symlinks.get('/'.join(out))
        if target is not None:
            hops += 1
            if hops > 40 or target.startswith(('/', '\\')):  # a loop, or absolute
                return None
            out.pop()  # a link's target is relative to the folder holding it
            todo[:0] = target.replace('\\', '/').split('/')
    return out


def _check_members(members, member_root, tar_path):
    """Raise `UserError` unless every member stays inside the folder that becomes the target.

    Paths are resolved with the archive's own symlinks applied, as `..` works on
    disk: a link target that looks inside as text may climb out through one.
    """
    def refuse(member, why):
        raise UserError(f'{tar_path}: refusing to extract member {member.name!r} ({why}); '
                        'the archive is damaged or hostile, delete it')
    symlinks = {}
    kinds = {}
    for m in members:
        name = '/'.join(_parts(m.name))
        if m.issym():
            if symlinks.get(name, m.linkname) != m.linkname:
                refuse(m, 'a second symlink of the same name')
            symlinks[name] = m.linkname
        kinds.setdefault(name, set()).add(m.issym())
    for m in members:
        if len(kinds['/'.join(_parts(m.name))]) > 1:
            refuse(m, 'both a symlink and a file or folder')
    keep = _parts(member_root or '')
    if _resolve(keep, symlinks) != keep:
        refuse(tarfile.TarInfo(member_root), 'the folder to extract is a symlink')
    for m in members:
        name = m.name
        if os.path.isabs(name) or name.startswith(('/', '\\')):
            refuse(m, 'absolute path')
        if '..' in _parts(name):
            refuse(m, "'..' in path")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            refuse(m, 'device or fifo')
        parent = _resolve(_parts(name)[:-1], symlinks)
        if parent is None:
            refuse(m, 'lands outside the target folder through a symlink')
        if m.issym():
            if os.path.isabs(m.linkname) or m.linkname.startswith(('/', '\\')):
                refuse(m, f'symlink to absolute path {m.linkname!r}')
            target = _resolve(parent + _parts(m.linkname), symlinks)
            # Only member_root is moved into place: a link in it that leaves it
            # would, after the move, point somewhere above the target.
            moves = (parent + _parts(name)[-1:])[:len(keep)] == keep
            if target is None or (moves and target[:len(keep)] != keep):
                refuse(m, f'symlink to {m.linkname!r} outside the target folder')
        elif m.islnk():
            # A hard link's target is relative to the archive's top, symlinks applied.
            target = _resolve(_parts(m.linkname), symlinks)
            if os.path.isabs(m.linkname) or target is None:
                refuse(m, f'hard link to {m.linkname!r} outside the target folder')
        elif _resolve(_parts(name), symlinks) is None:
            refuse(m, 'lands outside the target folder through a symlink')


def safe_extract(tar_path, target, member_root=None):
    """Extract the tar at `tar_path` so that its `member_root` folder becomes `target`.

    Every member is checked before anything is written: absolute paths, '..'
    and links leading outside `member_root` (resolved through the archive's
    own symlinks) raise `UserError`. Extraction happens in a temporary folder
    next to `target`, which is renamed into place only when complete, so an
    interrupted extraction never leaves a `target` behind.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    made = topmost_missing(parent)  # removed again on failure, with what is below it
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.extract', dir=parent)
    except OSError as e:
        raise UserError(f'{parent}: cannot extract {tar_path} here ({e.strerror})') from None
    root = os.path.realpath(tmp)
    done = False
    try:
        try:
            tar = tarfile.open(tar_path)
        except tarfile.ReadError:  # its message lists every compression it tried
            raise UserError(f'{tar_path}: not a tar archive; delete it and download it '
                            'again') from None
        except OSError as e:
            raise UserError(f'{tar_path}: cannot read it ({e.strerror})') from None
        with tar:
            _extract_all(tar, root, member_root, tar_path)
        src = os.path.join(root, member_root) if member_root else root
        if not os.path.isdir(src) or os.path.islink(src):
            raise UserError(f'{tar_path}: has no folder {member_root!r}; '
                            'it is not the expected archive, delete it')
        try:
            os.replace(src, target)
        except OSError as e:
            if not os.path.isdir(target):  # else another process finished first
                raise UserError(f'{target}: cannot move the extracted folder there '
                                f'({e.strerror})') from None
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done and made:
            folder = parent
            while True:  # the folders we created, innermost first, each only if empty
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
                if folder == made:
                    break
                folder = os.path.dirname(folder)
    return target


def _extract_all(tar, root, member_root, tar_path):
    """Check every member of the open `tar`, then extract them under `root`."""
    try:
        members = tar.getmembers()
        _check_members(members, member_root, tar_path)
        for member in members:
            # Belt and braces: the real path of what is on disk so far.
            real = os.path.realpath(os.path.join(root, member.name))
            if not _inside(root, real):
                raise UserError(f'{tar_path}: refusing to extract member '
                                f'{member.name!r} (reaches outside through a '
                                'link); delete the archive')
            if hasattr(tarfile, 'data_filter'):  # Python >= 3.8.17/3.11.4
                tar.extract(member, root, filter='data')
            else:
                tar.extract(member, root)
    except (tarfile.TarError, EOFError, KeyError) as e:  # KeyError: a link to nothing
        raise UserError(f'{tar_path}: cannot extract ({first_line(e)}); delete it and '
                        'download it again') from None
    except OSError as e:
        why = 'disk full' if e.errno == errno.ENOSPC else e.strerror or first_line(e)
        raise UserError(f'{tar_path}: cannot extract into {os.path.dirname(root)} '
                        f'({why}); free some space or fix the folder, and run '
                        'again') from None
