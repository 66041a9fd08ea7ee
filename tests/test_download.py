"""Tests for d2lfcn/download.py and download_voc2012, against a local HTTP server."""
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading

import numpy as np
import pytest

from d2lfcn import download as dl
from d2lfcn import voc
from d2lfcn.utils import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serve `server.files`, honour `Range: bytes=N-`, optionally misbehave."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get('Range')))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get('Range')
        if rng and not srv.ignore_range:
            start = int(rng.split('=')[1].split('-')[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if srv.cuts:  # promise the whole body, send half, hang up
            srv.cuts -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 in a thread; yields it (files, requests, url)."""
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.files, srv.requests, srv.cuts, srv.ignore_range = {}, [], 0, False
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


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
    assert '\n' not in msg and '--data-dir' in msg and '--demo' in msg
    assert not os.path.exists(tmp_path / 'VOCdevkit')


def test_falls_back_to_the_next_url(server, tmp_path):
    server.files['/good.bin'] = b'payload' * 100
    sha1 = hashlib.sha1(b'payload' * 100).hexdigest()
    path = dl.download([server.url + '/gone.bin', server.url + '/good.bin'],
                       str(tmp_path / 'f.bin'), sha1=sha1)
    assert open(path, 'rb').read() == b'payload' * 100
    assert [p for p, _ in server.requests] == ['/gone.bin', '/good.bin']


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


@pytest.mark.parametrize('members', [
    [_file('VOCdevkit/VOC2012/ok.txt'), _file('OUTSIDE/evil-abs')],
    [_file('VOCdevkit/VOC2012/ok.txt'), _file('VOCdevkit/VOC2012/../../../../evil')],
    [_link('VOCdevkit/VOC2012/out', '../../..'), _file('VOCdevkit/VOC2012/out/evil')],
    [_link('VOCdevkit/VOC2012/out', 'OUTSIDE'), _file('VOCdevkit/VOC2012/out/evil')],
    [_link('VOCdevkit/VOC2012/hard', '../outside', tarfile.LNKTYPE)],
    # Each link looks inside on its own; together they climb out.
    [_link('x', '.'), _link('a', 'x/..'), _file('a/evil')],
], ids=['absolute', 'dotdot', 'symlink-out', 'symlink-abs', 'hardlink-out', 'link-chain'])
def test_hostile_tar_is_refused_and_leaves_nothing(tmp_path, members):
    outside = str(tmp_path / 'outside')  # absolute; where an escape would land
    os.mkdir(outside)
    for info, _ in members:
        info.name = info.name.replace('OUTSIDE', outside)
        info.linkname = info.linkname.replace('OUTSIDE', outside)
    tar = _tar_with(tmp_path, *members)
    target = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    with pytest.raises(UserError) as info:
        dl.safe_extract(tar, str(target), member_root='VOCdevkit/VOC2012')
    assert '\n' not in str(info.value) and 'hostile.tar' in str(info.value)
    assert not target.exists()
    assert os.listdir(tmp_path / 'data' / 'VOCdevkit') == []  # temp folder removed
    found = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if 'evil' in f]
    assert found == []


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
    assert not target.exists() and os.listdir(target.parent) == []


def test_check_sha1_against_hashlib(tmp_path):
    (tmp_path / 'f').write_bytes(b'abc')
    assert dl.check_sha1(str(tmp_path / 'f'), 'a9993e364706816aba3e25717850c26c9cd0d89d')
    assert not dl.check_sha1(str(tmp_path / 'f'), '0' * 40)
