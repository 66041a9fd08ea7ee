"""Shared pytest fixtures.

Fixtures any test file may use:

- ``small_voc_dir`` (session): the VOCdevkit/VOC2012 folder of a tiny
  synthetic dataset (``SMALL_VOC`` parameters below: 12 train + 8 val images,
  sides 48..112 px, about a quarter with one side under 64, classes
  aeroplane, bus, cat, person, potted plant). Generated once per session;
  treat it as read-only. Crops of 64x64 keep most images.
- ``small_voc_params`` (session): the parameters it was made with.
- ``small_voc_copy`` (function): a writable copy of that folder in the test's
  tmp_path, for tests that damage or edit files.
- ``server`` (function): a local HTTP server on 127.0.0.1 serving
  ``server.files`` (path -> bytes), with Range requests and ways to misbehave.
- ``resnet`` (module): a seeded resnet18_v2 classifier of 7 classes, Xavier
  weights, with non-trivial BatchNorm statistics.

Every session also runs with $D2LFCN_DATA pointing at a fresh temporary
folder, so nothing (downloads, the demo dataset) is written to $HOME.
"""
import http.server
import os
import shutil
import socket
import threading

import pytest

import d2lfcn  # noqa: F401  before any test imports mxnet: numpy 1.24+ needs d2lfcn.compat

SMALL_VOC = dict(num_train=12, num_val=8, min_size=48, max_size=112,
                 small_size=64, small_fraction=0.25, seed=1)


@pytest.fixture(scope='session', autouse=True)
def _isolated_data_dir(tmp_path_factory):
    """Point $D2LFCN_DATA at a temporary folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('D2LFCN_DATA', str(tmp_path_factory.mktemp('d2lfcn-data')))
        yield


@pytest.fixture(scope='session')
def small_voc_params():
    """Return the make_synthetic_voc parameters of `small_voc_dir`."""
    return dict(SMALL_VOC)


@pytest.fixture(scope='session')
def small_voc_dir(tmp_path_factory):
    """Return a tiny synthetic VOC2012 folder shared by the session (read-only)."""
    from d2lfcn.synthetic import make_synthetic_voc
    return make_synthetic_voc(str(tmp_path_factory.mktemp('small-voc')), **SMALL_VOC)


@pytest.fixture(scope='module')
def resnet():
    """Return a resnet18_v2 classifier of 7 classes whose BatchNorm has seen data."""
    import mxnet as mx
    from mxnet import autograd, nd
    from mxnet.gluon.model_zoo import vision
    mx.random.seed(0)
    net = vision.resnet18_v2(classes=7)
    net.initialize(mx.init.Xavier())
    # Non-trivial BatchNorm statistics, so that evaluation mode matters.
    with autograd.record():
        net(nd.random.uniform(shape=(4, 3, 64, 64))).backward()
    return net


@pytest.fixture
def small_voc_copy(small_voc_dir, tmp_path):
    """Return a writable copy of `small_voc_dir` under tmp_path."""
    dst = os.path.join(str(tmp_path), 'VOCdevkit', 'VOC2012')
    shutil.copytree(small_voc_dir, dst)
    return dst


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serve `server.files`, honour `Range: bytes=N-`, optionally misbehave."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get('Range')))
        if self.path.startswith('/loop/'):  # a redirect to itself, forever
            self.send_response(302)
            self.send_header('Location', self.path)
            self.end_headers()
            return
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
        self.send_header('Content-Length', srv.length or str(len(body)))
        self.end_headers()
        if srv.gate is not None:  # send half, then wait until the test opens the gate
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            srv.gate.wait(30)
            body = body[len(body) // 2:]
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
    srv.length, srv.gate = None, None  # a Content-Length to send; a threading.Event
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
