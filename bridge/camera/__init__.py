"""The camera daemon (``sigbridge camera``, docs/camera.md): camera.yaml (`config`), the sources and the
fan-out (`source`), one WebRTC peer connection per viewer (`peers`, aiortc) and the process around
them (`daemon`). Everything but `config` needs the ``camera`` extra; the bridge imports none of it."""
