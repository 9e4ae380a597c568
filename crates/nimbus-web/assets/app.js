// Nimbus web phone: the page. Plain JavaScript, no build step.
//
// The phone (a nimbus process on this machine) is driven over a WebSocket
// (JSON messages, see crates/nimbus-web/src/protocol.rs); camera, microphone
// and screen go to it over WebRTC (H.264 and G.711, answered by its bridge).
// Automation hooks: the element ids in index.html and window.nimbusPhone
// (docs/phone.md).
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get('token') || '';

  const ui = {
    user: $('user'), password: $('password'), passwordBox: $('password-box'),
    loginForm: $('login-form'), login: $('login'), logout: $('logout'), who: $('who'),
    callForm: $('call-form'), callee: $('callee'), call: $('call'),
    ringing: $('ringing'), ringingText: $('ringing-text'), accept: $('accept'), reject: $('reject'),
    hangup: $('hangup'), muteMic: $('mute-mic'), cameraOff: $('camera-off'), share: $('share-screen'),
    cameraSelect: $('camera-select'), micSelect: $('mic-select'),
    status: $('status'), chatLog: $('chat-log'), chatForm: $('chat-form'),
    chatInput: $('chat-input'), chatSend: $('chat-send'), log: $('log'),
    local: $('local'), remote: $('remote'), placeholder: $('remote-placeholder'), level: $('remote-level'),
  };

  // ----- state ------------------------------------------------------------
  const st = {
    ws: null, wsOpen: false, replaced: false, retry: 500,
    phone: { loggedIn: false, user: null, online: false, loggingIn: false, passwordWanted: false, call: null },
    callStatus: null,            // the phone's last `status` (RTMFP side)
    rtc: { videoFramesReceived: 0, audioPacketsReceived: 0, inKbps: 0, outKbps: 0,
           inLoss: 0, fps: 0, width: 0, height: 0, rttMs: null },
    pc: null, offerId: 0, localStream: null, cameraTrack: null, micTrack: null, screenTrack: null,
    micMuted: false, cameraMuted: false,
    audio: { ctx: null, analyser: null, buf: null, maxRms: 0, loud: 0, samples: 0 },
    lastStats: null,
  };

  // ----- the WebSocket ----------------------------------------------------
  function connect() {
    if (st.replaced) return;
    const ws = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(token)}`);
    st.ws = ws;
    ws.onopen = () => { st.wsOpen = true; st.retry = 500; startMedia(); };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      onMessage(m);
    };
    ws.onclose = () => {
      const was = st.wsOpen;
      st.wsOpen = false;
      if (st.replaced) return;
      if (was) logLine('error', 'lost the phone; trying again…');
      ui.who.textContent = 'not connected to the phone';
      setTimeout(connect, st.retry);
      st.retry = Math.min(st.retry * 2, 8000);
    };
  }

  function send(m) {
    if (st.ws && st.wsOpen) st.ws.send(JSON.stringify(m));
  }

  function onMessage(m) {
    switch (m.type) {
      case 'hello': break;
      case 'state': st.phone = m; render(); break;
      case 'line': logLine(m.kind, m.text, m.unixMs); break;
      case 'chat': chatLine(m); break;
      case 'status': st.callStatus = m; renderStatus(); break;
      case 'answer':
        if (st.pc && m.id === st.offerId) {
          const pc = st.pc;
          pc.setRemoteDescription({ type: 'answer', sdp: m.sdp })
            .then(() => keepFrameRate(pc))
            .catch((e) => logLine('error', 'cannot use the phone\'s answer: ' + e));
        }
        break;
      case 'offerError': logLine('error', 'the phone refused our media: ' + m.message); break;
      case 'replaced':
        st.replaced = true;
        stopPc();
        ui.who.textContent = 'This phone is now open in another page.';
        logLine('error', 'this phone is now open in another page; this one has stopped');
        break;
      default: break;
    }
  }

  // ----- the page ---------------------------------------------------------
  function clock(ms) {
    const d = ms ? new Date(ms) : new Date();
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function listItem(list, cls, ms, parts) {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    const t = document.createElement('time');
    t.dateTime = new Date(ms || Date.now()).toISOString();
    t.textContent = clock(ms);
    li.appendChild(t);
    for (const [c, text] of parts) {
      const s = document.createElement('span');
      if (c) s.className = c;
      s.textContent = text;
      li.appendChild(s);
    }
    list.appendChild(li);
    while (list.children.length > 200) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  function logLine(kind, text, ms) {
    listItem(ui.log, kind, ms, [[null, text]]);
  }

  function chatLine(m) {
    listItem(ui.chatLog, m.local ? 'me' : 'peer', m.unixMs, [['from', m.local ? 'me' : m.from], ['text', m.text]]);
  }

  function render() {
    const p = st.phone;
    const call = p.call;
    const state = call ? call.state : 'idle';
    const active = state === 'calling' || state === 'ringing' || state === 'incall';
    if (p.user && document.activeElement !== ui.user && !ui.user.value) ui.user.value = p.user;
    ui.passwordBox.hidden = !p.passwordWanted;
    ui.logout.hidden = !p.loggedIn;
    // logged in, the name is fixed until Log out
    ui.login.hidden = p.loggedIn;
    ui.login.disabled = p.loggingIn;
    ui.user.readOnly = p.loggedIn || p.loggingIn;
    if (p.loggedIn) {
      ui.who.textContent = `${p.user}${p.online ? '' : ' (reconnecting to the server…)'}`;
    } else if (p.loggingIn) {
      ui.who.textContent = `logging in as ${p.user}…`;
    } else {
      ui.who.textContent = p.passwordWanted ? 'this server wants a password' : 'not logged in';
    }
    ui.call.disabled = !p.loggedIn || active;
    ui.callee.disabled = !p.loggedIn || active;
    ui.ringing.hidden = state !== 'ringing';
    ui.accept.disabled = state !== 'ringing';
    ui.reject.disabled = state !== 'ringing';
    if (state === 'ringing') ui.ringingText.textContent = `${call.peer || 'someone'} is calling`;
    ui.hangup.disabled = !active;
    ui.chatInput.disabled = state !== 'incall';
    ui.chatSend.disabled = state !== 'incall';
    ui.placeholder.hidden = state === 'incall';
    ui.placeholder.textContent = {
      idle: p.loggedIn ? 'No call' : 'Log in to call',
      calling: `Calling ${call && call.peer || ''}…`,
      ringing: `${call && call.peer || 'Someone'} is calling`,
      ended: 'Call ended',
    }[state] || '';
    if (state === 'incall') playRemote();
    if (state === 'ringing' && st.shownState !== 'ringing') ui.accept.focus();
    st.shownState = state;
    renderStatus();
  }

  function pct(x) { return (100 * (x || 0)).toFixed(1) + ' %'; }

  function renderStatus() {
    const call = st.phone.call;
    if (!call || call.state !== 'incall') {
      ui.status.textContent = call ? call.state : 'idle';
      return;
    }
    const s = st.callStatus || {};
    const r = st.rtc;
    const path = s.path === 'direct' ? `direct (peer to peer${s.peerAddress ? ', ' + s.peerAddress : ''})`
      : s.path === 'relay' ? 'through the server\'s relay' : (s.path || call.path || 'connecting');
    const lines = [
      `with ${call.peer || '?'}: ${path}`,
      `RTT ${s.rttMs != null ? s.rttMs.toFixed(1) + ' ms' : '–'}`,
      `from the peer: ${(s.rxKbps || 0).toFixed(0)} kbit/s, loss ${pct(Math.max(s.lossInAudio || 0, s.lossInVideo || 0))}` +
        `; video ${r.width}x${r.height} ${r.fps.toFixed(0)} fps`,
      `to the peer: ${(s.txKbps || 0).toFixed(0)} kbit/s, loss ${pct(s.lossOut)}` +
        (s.testSource ? ' (test source)' : ''),
      `page ⇄ phone: in ${r.inKbps.toFixed(0)} kbit/s (loss ${pct(r.inLoss)}), out ${r.outKbps.toFixed(0)} kbit/s`,
    ];
    ui.status.textContent = lines.join('\n');
  }

  // ----- media ------------------------------------------------------------
  async function getMedia(videoId, audioId) {
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (audioId) audio.deviceId = { exact: audioId };
    const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
    if (videoId) video.deviceId = { exact: videoId };
    for (const c of [{ audio, video }, { audio }, { video }]) {
      try { return await navigator.mediaDevices.getUserMedia(c); } catch (e) { /* next */ }
    }
    logLine('error', 'no camera or microphone could be opened: the peer will not see or hear you');
    return new MediaStream();
  }

  async function startMedia() {
    if (!st.localStream) {
      if (!navigator.mediaDevices) {
        logLine('error', 'this browser gives no access to cameras here (it wants http://127.0.0.1 or https)');
        st.localStream = new MediaStream();
      } else {
        st.localStream = await getMedia();
      }
      st.cameraTrack = st.localStream.getVideoTracks()[0] || null;
      if (st.cameraTrack) st.cameraTrack.contentHint = 'motion';
      st.micTrack = st.localStream.getAudioTracks()[0] || null;
      ui.local.srcObject = st.localStream;
      listDevices();
      applyMute();
    }
    await newPc();
  }

  function stopPc() {
    if (st.pc) { try { st.pc.close(); } catch (e) { /* closed */ } }
    st.pc = null;
  }

  async function newPc() {
    stopPc();
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    st.pc = pc;
    const remote = new MediaStream();
    ui.remote.srcObject = remote;
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      if (ev.track.kind === 'audio') startAnalyser(ev.track);
      playRemote();
    };
    pc.onconnectionstatechange = () => {
      if (pc !== st.pc) return;
      if (pc.connectionState === 'failed') {
        logLine('error', 'the media connection to the phone failed; retrying');
        setTimeout(() => { if (pc === st.pc && st.wsOpen) newPc(); }, 1000);
      }
    };
    // audio first, then video: always both lines, with or without a track
    // (replaceTrack switches devices and the screen later)
    pc.addTransceiver(st.micTrack || 'audio', { direction: 'sendrecv', streams: [st.localStream] });
    pc.addTransceiver(st.cameraTrack || 'video', { direction: 'sendrecv', streams: [st.localStream] });
    if (st.screenTrack) videoSender(pc).replaceTrack(st.screenTrack);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    st.offerId += 1;
    send({ type: 'offer', id: st.offerId, sdp: pc.localDescription.sdp });
  }

  // a busy machine makes the encoder give up resolution, not frame rate
  // (the screen, marked 'detail', keeps its resolution)
  function keepFrameRate(pc) {
    try {
      const s = videoSender(pc);
      const p = s.getParameters();
      p.degradationPreference = st.screenTrack ? 'maintain-resolution' : 'maintain-framerate';
      return s.setParameters(p).catch(() => {});
    } catch (e) { return undefined; /* not supported: the browser's default */ }
  }

  function videoSender(pc) {
    return pc.getTransceivers().find((t) => t.receiver.track.kind === 'video').sender;
  }

  function audioSender(pc) {
    return pc.getTransceivers().find((t) => t.receiver.track.kind === 'audio').sender;
  }

  function playRemote() {
    const p = ui.remote.play();
    if (p && p.catch) p.catch(() => { /* autoplay: a click (Call, Accept) starts it */ });
    if (st.audio.ctx && st.audio.ctx.state === 'suspended') st.audio.ctx.resume().catch(() => {});
  }

  function startAnalyser(track) {
    try {
      const a = st.audio;
      if (!a.ctx) a.ctx = new AudioContext();
      const src = a.ctx.createMediaStreamSource(new MediaStream([track]));
      a.analyser = a.ctx.createAnalyser();
      a.analyser.fftSize = 1024;
      a.buf = new Float32Array(a.analyser.fftSize);
      src.connect(a.analyser);
    } catch (e) { /* no level meter */ }
  }

  function sampleLevel() {
    const a = st.audio;
    if (!a.analyser) return;
    a.analyser.getFloatTimeDomainData(a.buf);
    let s = 0;
    for (let i = 0; i < a.buf.length; i++) s += a.buf[i] * a.buf[i];
    const rms = Math.sqrt(s / a.buf.length);
    a.samples += 1;
    if (rms > 0.01) a.loud += 1;
    if (rms > a.maxRms) a.maxRms = rms;
    ui.level.style.width = Math.min(100, rms * 300).toFixed(0) + '%';
  }

  async function listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, track) => {
      const current = track && track.getSettings ? track.getSettings().deviceId : '';
      select.textContent = '';
      for (const d of devices.filter((x) => x.kind === kind)) {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${kind === 'videoinput' ? 'camera' : 'microphone'} ${select.length + 1}`;
        if (d.deviceId === current) o.selected = true;
        select.appendChild(o);
      }
      select.disabled = select.length === 0;
    };
    fill(ui.cameraSelect, 'videoinput', st.cameraTrack);
    fill(ui.micSelect, 'audioinput', st.micTrack);
  }

  async function switchDevice(kind, id) {
    try {
      const c = kind === 'video'
        ? { video: { deviceId: { exact: id }, width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } } }
        : { audio: { deviceId: { exact: id }, echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
      const s = await navigator.mediaDevices.getUserMedia(c);
      const track = kind === 'video' ? s.getVideoTracks()[0] : s.getAudioTracks()[0];
      const old = kind === 'video' ? st.cameraTrack : st.micTrack;
      if (old) { st.localStream.removeTrack(old); old.stop(); }
      st.localStream.addTrack(track);
      if (kind === 'video') st.cameraTrack = track; else st.micTrack = track;
      applyMute();
      if (st.pc && !(kind === 'video' && st.screenTrack)) {
        await (kind === 'video' ? videoSender(st.pc) : audioSender(st.pc)).replaceTrack(track);
      }
      logLine('info', `${kind === 'video' ? 'camera' : 'microphone'}: ${track.label || 'changed'}`);
    } catch (e) {
      logLine('error', `cannot switch the ${kind === 'video' ? 'camera' : 'microphone'}: ${e.message || e}`);
    }
  }

  function applyMute() {
    if (st.micTrack) st.micTrack.enabled = !st.micMuted;
    if (st.cameraTrack) st.cameraTrack.enabled = !st.cameraMuted;
    if (st.screenTrack) st.screenTrack.enabled = !st.cameraMuted;
    ui.muteMic.setAttribute('aria-pressed', String(st.micMuted));
    ui.muteMic.textContent = st.micMuted ? 'Unmute microphone' : 'Mute microphone';
    ui.cameraOff.setAttribute('aria-pressed', String(st.cameraMuted));
    ui.cameraOff.textContent = st.cameraMuted ? 'Camera on' : 'Camera off';
    send({ type: 'media', audio: !st.micMuted, video: !st.cameraMuted });
  }

  async function toggleScreen() {
    if (st.screenTrack) return stopScreen();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      logLine('error', 'this browser cannot share the screen');
      return;
    }
    try {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
      const track = s.getVideoTracks()[0];
      st.screenTrack = track;
      track.contentHint = 'detail';
      track.onended = () => stopScreen();
      if (st.pc) { await videoSender(st.pc).replaceTrack(track); keepFrameRate(st.pc); }
      ui.local.srcObject = new MediaStream([track]);
      ui.local.classList.add('screen');
      ui.share.setAttribute('aria-pressed', 'true');
      ui.share.textContent = 'Stop sharing';
      applyMute();
      logLine('info', 'sharing the screen');
    } catch (e) {
      logLine('error', 'screen sharing refused: ' + (e.message || e));
    }
  }

  async function stopScreen() {
    const t = st.screenTrack;
    if (!t) return;
    st.screenTrack = null;
    t.stop();
    if (st.pc) { await videoSender(st.pc).replaceTrack(st.cameraTrack); keepFrameRate(st.pc); }
    ui.local.srcObject = st.localStream;
    ui.local.classList.remove('screen');
    ui.share.setAttribute('aria-pressed', 'false');
    ui.share.textContent = 'Share screen';
    logLine('info', 'back to the camera');
  }

  // ----- figures ----------------------------------------------------------
  async function pollStats() {
    const pc = st.pc;
    if (!pc) return;
    let report;
    try { report = await pc.getStats(); } catch (e) { return; }
    const now = performance.now();
    const cur = { t: now, inBytes: 0, outBytes: 0, inLost: 0, inPackets: 0 };
    const r = st.rtc;
    report.forEach((x) => {
      if (x.type === 'inbound-rtp') {
        cur.inBytes += x.bytesReceived || 0;
        cur.inLost += Math.max(0, x.packetsLost || 0);
        cur.inPackets += x.packetsReceived || 0;
        if (x.kind === 'video') {
          r.videoFramesReceived = x.framesReceived || x.framesDecoded || 0;
          r.fps = x.framesPerSecond || 0;
          r.width = x.frameWidth || 0;
          r.height = x.frameHeight || 0;
        } else if (x.kind === 'audio') {
          r.audioPacketsReceived = x.packetsReceived || 0;
        }
      } else if (x.type === 'outbound-rtp') {
        cur.outBytes += x.bytesSent || 0;
      } else if (x.type === 'candidate-pair' && x.nominated && x.currentRoundTripTime != null) {
        r.rttMs = x.currentRoundTripTime * 1000;
      }
    });
    const last = st.lastStats;
    if (last && pc === st.pcOfLast) {
      const dt = (cur.t - last.t) / 1000;
      if (dt > 0) {
        r.inKbps = Math.max(0, (cur.inBytes - last.inBytes) * 8 / 1000 / dt);
        r.outKbps = Math.max(0, (cur.outBytes - last.outBytes) * 8 / 1000 / dt);
        const lost = cur.inLost - last.inLost;
        const got = cur.inPackets - last.inPackets;
        r.inLoss = lost + got > 0 ? Math.max(0, lost) / (lost + got) : 0;
      }
    }
    st.lastStats = cur;
    st.pcOfLast = pc;
    renderStatus();
  }

  // ----- controls ---------------------------------------------------------
  ui.loginForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const user = ui.user.value.trim();
    if (!user) return;
    const m = { type: 'login', user };
    if (!ui.passwordBox.hidden && ui.password.value) m.password = ui.password.value;
    send(m);
  });
  ui.logout.addEventListener('click', () => send({ type: 'logout' }));
  ui.callForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const peer = ui.callee.value.trim();
    if (!peer) return;
    playRemote();
    send({ type: 'call', peer });
  });
  ui.accept.addEventListener('click', () => { playRemote(); send({ type: 'accept' }); });
  ui.reject.addEventListener('click', () => send({ type: 'reject' }));
  ui.hangup.addEventListener('click', () => send({ type: 'hangup' }));
  ui.chatForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.chatInput.value;
    if (!text.trim()) return;
    send({ type: 'chat', text });
    ui.chatInput.value = '';
  });
  ui.muteMic.addEventListener('click', () => { st.micMuted = !st.micMuted; applyMute(); });
  ui.cameraOff.addEventListener('click', () => { st.cameraMuted = !st.cameraMuted; applyMute(); });
  ui.share.addEventListener('click', toggleScreen);
  ui.cameraSelect.addEventListener('change', () => switchDevice('video', ui.cameraSelect.value));
  ui.micSelect.addEventListener('change', () => switchDevice('audio', ui.micSelect.value));
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', listDevices);
  }

  // ----- automation hooks (docs/phone.md) ---------------------------------
  window.nimbusPhone = {
    /** The phone as the page shows it. */
    state() {
      const p = st.phone;
      const c = p.call;
      return {
        loggedIn: !!p.loggedIn,
        user: p.user || null,
        call: c ? {
          state: c.state,
          peer: c.peer || null,
          path: (st.callStatus && st.callStatus.path) || c.path || null,
          videoFramesReceived: st.rtc.videoFramesReceived,
          audioPacketsReceived: st.rtc.audioPacketsReceived,
          rttMs: st.callStatus && st.callStatus.rttMs != null ? st.callStatus.rttMs : null,
        } : null,
      };
    },
    /** Pictures shown in #remote so far. */
    remoteFrames() {
      const q = ui.remote.getVideoPlaybackQuality ? ui.remote.getVideoPlaybackQuality() : null;
      return q ? q.totalVideoFrames - q.droppedVideoFrames : 0;
    },
    /** The remote audio's level: {maxRms, loud (50 ms windows above 0.01), samples}. */
    audioLevel() {
      const a = st.audio;
      return { maxRms: a.maxRms, loud: a.loud, samples: a.samples };
    },
    /** The media connection to the phone is up. */
    mediaConnected() { return !!(st.pc && st.pc.connectionState === 'connected'); },
  };

  setInterval(sampleLevel, 50);
  setInterval(pollStats, 500);
  render();
  connect();
})();
