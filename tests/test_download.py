"""Tests for d2lfcn/download.py and download_voc2012, against a local HTTP server."""
import copy
import hashlib
import io
import os
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from d2lfcn import download as dl
from d2lfcn import voc
from d2lfcn.utils import UserError


def _voc_tar():
    """Return (tar bytes, {member: contents}) shaped like the VOC2012 archive."""
    rng = np.random.default_rng(0)
    files = {'VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt': b'a\n',
             'VOCdevkit/VOC2012/JPEGImages/a.jpg': rng.bytes(150_000),
             'VOCdevkit/VOC2012/SegmentationClass/a.png': rng.bytes(40_000)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), files


@pytest.fixture
def voc_server(server, monkeypatch):
    """Serve a small VOC-shaped tar as the VOC2012 download; return (server, tar bytes)."""
    data, files = _voc_tar()
    server.files['/mirror/' + voc.VOC_TAR] = data
    server.members = files
    monkeypatch.setenv('D2LFCN_VOC_URL', server.url + '/mirror/')
    monkeypatch.setattr(voc, 'VOC_SHA1', hashlib.sha1(data).hexdigest())
    return server, data


def _assert_extracted(voc_dir, files):
    for name, data in files.items():
        rel = os.path.relpath(name, 'VOCdevkit/VOC2012')
        with open(os.path.join(voc_dir, rel), 'rb') as f:
            assert f.read() == data


def test_download_extracts_and_then_stays_offline(voc_server, tmp_path):
    srv, data = voc_server
    voc_dir = voc.download_voc2012(str(tmp_path))
    assert voc_dir == os.path.join(str(tmp_path), 'VOCdevkit', 'VOC2012')
    _assert_extracted(voc_dir, srv.members)
    assert srv.requests == [('/mirror/' + voc.VOC_TAR, None)]
    assert sorted(os.listdir(tmp_path)) == sorted(['VOCdevkit', voc.VOC_TAR])
    assert os.listdir(tmp_path / 'VOCdevkit') == ['VOC2012']  # no temp folders left
    assert voc.download_voc2012(str(tmp_path)) == voc_dir
    import shutil
    shutil.rmtree(tmp_path / 'VOCdevkit')  # the verified tar is re-extracted offline
    assert voc.download_voc2012(str(tmp_path)) == voc_dir
    assert len(srv.requests) == 1


def test_url_variable_may_name_the_tar_itself(voc_server, tmp_path, monkeypatch):
    srv, data = voc_server
    srv.files['/elsewhere/voc.tar'] = data
    monkeypatch.setenv('D2LFCN_VOC_URL', srv.url + '/elsewhere/voc.tar')
    assert voc.voc_urls() == [srv.url + '/elsewhere/voc.tar']
    _assert_extracted(voc.download_voc2012(str(tmp_path)), srv.members)


def test_default_urls_are_the_d2l_mirror_then_the_official_host(monkeypatch):
    monkeypatch.delenv('D2LFCN_VOC_URL', raising=False)
    assert voc.voc_urls() == [
        'http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar',
        'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar']


def test_cut_connection_resumes_with_range(voc_server, tmp_path):
    srv, data = voc_server
    srv.cuts = 1
    _assert_extracted(voc.download_voc2012(str(tmp_path)), srv.members)
    half = len(data) // 2
    assert srv.requests == [('/mirror/' + voc.VOC_TAR, None),
                            ('/mirror/' + voc.VOC_TAR, f'bytes={half}-')]


def test_partial_file_from_an_earlier_run_is_resumed(voc_server, tmp_path):
    srv, data = voc_server
    (tmp_path / (voc.VOC_TAR + '.part')).write_bytes(data[:1000])
    _assert_extracted(voc.download_voc2012(str(tmp_path)), srv.members)
    assert srv.requests == [('/mirror/' + voc.VOC_TAR, 'bytes=1000-')]


def test_complete_partial_file_is_finished_without_refetching(voc_server, tmp_path):
    srv, data = voc_server
    (tmp_path / (voc.VOC_TAR + '.part')).write_bytes(data)  # crashed before the rename
    _assert_extracted(voc.download_voc2012(str(tmp_path)), srv.members)
    assert srv.requests == [('/mirror/' + voc.VOC_TAR, f'bytes={len(data)}-')]  # got 416


def test_server_ignoring_range_restarts_cleanly(voc_server, tmp_path):
    srv, data = voc_server
    srv.ignore_range = True
    (tmp_path / (voc.VOC_TAR + '.part')).write_bytes(b'x' * 1000)  # stale junk
    _assert_extracted(voc.download_voc2012(str(tmp_path)), srv.members)
    assert (tmp_path / voc.VOC_TAR).read_bytes() == data


def test_wrong_checksum_deletes_the_file(voc_server, tmp_path, monkeypatch):
    monkeypatch.setattr(voc, 'VOC_SHA1', '0' * 40)
    with pytest.raises(UserError) as info:
        voc.download_voc2012(str(tmp_path))
    msg = str(info.value)
    assert '\n' not in msg and 'sha1' in msg and voc.VOC_TAR in msg
    assert os.listdir(tmp_path) == []


def test_unreachable_server_is_one_clear_line(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    monkeypatch.setenv('D2LFCN_VOC_URL', f'http://127.0.0.1:{port}/')
    with pytest.raises(UserError) as info:
        voc.download_voc2012(str(tmp_path))
    msg = str(info.value)
    assert '\n' not in msg and 'data_dir' in msg and 'demo=True' in msg
    assert not os.path.exists(tmp_path / 'VOCdevkit')


def test_falls_back_to_the_next_url(server, tmp_path):
    server.files['/good.bin'] = b'payload' * 100
    sha1 = hashlib.sha1(b'payload' * 100).hexdigest()
    path = dl.download([server.url + '/gone.bin', server.url + '/good.bin'],
                       str(tmp_path / 'f.bin'), sha1=sha1)
    assert open(path, 'rb').read() == b'payload' * 100
    assert [p for p, _ in server.requests] == ['/gone.bin', '/good.bin']


def _one_line_error(fn, *args):
    with pytest.raises(UserError) as info:
        fn(*args)
    msg = str(info.value)
    assert '\n' not in msg, msg
    return msg


def test_bad_content_length_is_one_line(voc_server, tmp_path):
    srv, _ = voc_server
    srv.length = 'abc'
    msg = _one_line_error(voc.download_voc2012, str(tmp_path))
    assert "Content-Length 'abc'" in msg and 'data_dir' in msg
    assert os.listdir(tmp_path) == []  # no empty .part left


def test_redirect_loop_is_one_line(server, tmp_path):
    msg = _one_line_error(dl.download, server.url + '/loop/f.tar', str(tmp_path / 'f.tar'))
    assert 'redirect' in msg and 'infinite loop' in msg
    assert os.listdir(tmp_path) == []


def test_second_download_into_the_same_file_says_so(voc_server, tmp_path):
    srv, data = voc_server
    srv.gate = threading.Event()
    first = {}
    thread = threading.Thread(target=lambda: first.update(
        path=voc.download_voc2012(str(tmp_path))))
    thread.start()
    part = tmp_path / (voc.VOC_TAR + '.part')
    deadline = time.monotonic() + 30
    while not srv.requests:  # the first holds the lock and waits for its data
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        msg = _one_line_error(voc.download_voc2012, str(tmp_path))
    finally:
        srv.gate.set()
        thread.join(30)
    assert str(part) in msg and 'another download' in msg
    _assert_extracted(first['path'], srv.members)  # the first one finished unharmed
    assert len(srv.requests) == 1


def test_full_disk_during_download_says_so(server, tmp_path):
    server.files['/f.bin'] = b'x' * 5000
    path = tmp_path / 'f.bin'
    # Writes to /dev/full fail with ENOSPC in the kernel, as on a full disk.
    os.symlink('/dev/full', str(path) + '.part')
    msg = _one_line_error(dl.download, server.url + '/f.bin', str(path))
    assert msg.startswith(f'{path}.part: disk full after 0 bytes') and 'check the network' not in msg
    assert os.listdir(tmp_path) == []


def _tar_with(tmp_path, *members):
    """Write a tar of (TarInfo, bytes-or-None) members; return its path."""
    path = str(tmp_path / 'hostile.tar')
    with tarfile.open(path, 'w') as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b'evil'):
    return tarfile.TarInfo(name), data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _mode(info, mode):
    info[0].mode = mode
    return info


HOSTILE = {
    'absolute': [_file('VOCdevkit/VOC2012/ok.txt'), _file('OUTSIDE/evil-abs')],
    'dotdot': [_file('VOCdevkit/VOC2012/ok.txt'), _file('VOCdevkit/VOC2012/../../../../evil')],
    'symlink-out': [_link('VOCdevkit/VOC2012/out', '../../..'),
                    _file('VOCdevkit/VOC2012/out/evil')],
    'symlink-abs': [_link('VOCdevkit/VOC2012/out', 'OUTSIDE'),
                    _file('VOCdevkit/VOC2012/out/evil')],
    'hardlink-out': [_link('VOCdevkit/VOC2012/hard', '../outside', tarfile.LNKTYPE)],
    # Each link looks inside on its own; together they climb out.
    'link-chain': [_link('x', '.'), _link('a', 'x/..'), _file('a/evil')],
    # As text the hard link's target is <extraction folder>/victim; on disk, `e`
    # (a symlink to `a`, inside) turns the six '..' into tmp_path/victim. Without
    # tarfile's data filter this linked and chmod'ed the victim.
    'hardlink-via-symlink': [
        _link('VOCdevkit/VOC2012/a/b/c/e', '../..'),
        _mode(_link('VOCdevkit/VOC2012/evil',
                    'VOCdevkit/VOC2012/a/b/c/e/../../../../../../victim',
                    tarfile.LNKTYPE), 0o777)],
    # Inside the temporary folder, but only VOC2012 moves into place: then `up`
    # would point at the data folder above the target.
    'symlink-leaves-after-move': [_file('VOCdevkit/VOC2012/ok.txt'),
                                  _link('VOCdevkit/VOC2012/up', '../..')],
    'symlinked-voc-folder': [_file('VOCdevkit/real/ok.txt'), _link('VOCdevkit/VOC2012', '..')],
}


@pytest.mark.parametrize('data_filter', [True, False], ids=['filter', 'no-filter'])
@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_tar_is_refused_and_leaves_nothing(tmp_path, monkeypatch, case, data_filter):
    if not data_filter:  # as on Pythons before 3.8.17 / 3.11.4
        monkeypatch.delattr(tarfile, 'data_filter', raising=False)
    members = [(copy.copy(info), data) for info, data in HOSTILE[case]]
    outside = str(tmp_path / 'outside')  # absolute; where an escape would land
    os.mkdir(outside)
    victim = tmp_path / 'victim'
    victim.write_bytes(b'keep me')
    victim.chmod(0o644)
    for info, _ in members:
        info.name = info.name.replace('OUTSIDE', outside)
        info.linkname = info.linkname.replace('OUTSIDE', outside)
    tar = _tar_with(tmp_path, *members)
    target = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    with pytest.raises(UserError) as info:
        dl.safe_extract(tar, str(target), member_root='VOCdevkit/VOC2012')
    assert '\n' not in str(info.value) and 'hostile.tar' in str(info.value)
    assert not os.path.lexists(target)
    assert not (tmp_path / 'data').exists()  # nor the temp folder, nor its parents
    found = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if 'evil' in f]
    assert found == []
    st = victim.stat()
    assert (st.st_mode & 0o777, st.st_nlink, victim.read_bytes()) == (0o644, 1, b'keep me')


def test_links_inside_the_folder_are_extracted(tmp_path):
    members = [_file('VOCdevkit/VOC2012/JPEGImages/a.jpg', b'jpeg'),
               _link('VOCdevkit/VOC2012/latest', 'JPEGImages/a.jpg'),
               _link('VOCdevkit/VOC2012/same', 'VOCdevkit/VOC2012/JPEGImages/a.jpg',
                     tarfile.LNKTYPE),
               _link('VOCdevkit/top', 'VOC2012')]  # outside VOC2012: not moved, allowed
    target = tmp_path / 'VOC2012'
    dl.safe_extract(_tar_with(tmp_path, *members), str(target),
                    member_root='VOCdevkit/VOC2012')
    assert os.readlink(target / 'latest') == 'JPEGImages/a.jpg'
    assert (target / 'latest').read_bytes() == (target / 'same').read_bytes() == b'jpeg'
    assert sorted(os.listdir(tmp_path)) == ['VOC2012', 'hostile.tar']


@pytest.mark.parametrize('content, message', [
    (b'this is not a tar file\n' * 40, 'not a tar archive'),
    (None, 'cannot extract'),  # a real tar cut in half
    ('hardlink-to-nothing', 'cannot extract'),
])
def test_damaged_archive_is_one_line(tmp_path, content, message):
    tar = tmp_path / 'voc.tar'
    if content is None:
        content = _voc_tar()[0]
        content = content[:len(content) // 2]
    if content == 'hardlink-to-nothing':  # tarfile raises KeyError for it
        tar = _tar_with(tmp_path, _link('VOCdevkit/VOC2012/a', 'VOCdevkit/VOC2012/none',
                                        tarfile.LNKTYPE))
    else:
        tar.write_bytes(content)
    target = tmp_path / 'data' / 'VOC2012'
    with pytest.raises(UserError) as info:
        dl.safe_extract(str(tar), str(target), member_root='VOCdevkit/VOC2012')
    assert '\n' not in str(info.value) and message in str(info.value), info.value
    assert not (tmp_path / 'data').exists()


def test_crash_mid_extraction_leaves_no_target(tmp_path, monkeypatch):
    data, _ = _voc_tar()
    tar = tmp_path / 'voc.tar'
    tar.write_bytes(data)
    calls = []
    real_extract = tarfile.TarFile.extract

    def crash_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_extract(self, *args, **kwargs)
    monkeypatch.setattr(tarfile.TarFile, 'extract', crash_on_third)
    target = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    with pytest.raises(KeyboardInterrupt):
        dl.safe_extract(str(tar), str(target), member_root='VOCdevkit/VOC2012')
    assert not (tmp_path / 'data').exists()


def test_check_sha1_against_hashlib(tmp_path):
    (tmp_path / 'f').write_bytes(b'abc')
    assert dl.check_sha1(str(tmp_path / 'f'), 'a9993e364706816aba3e25717850c26c9cd0d89d')
    assert not dl.check_sha1(str(tmp_path / 'f'), '0' * 40)
