/*! clickstream tracker: page views, events and identity for the clickstream ingest gateway.
 * Served by the gateway at /tracker.js. Load it with the two-line snippet from the README:
 *   <script>window.clickstream=window.clickstream||[];["page","track","identify","reset","flush"].forEach(function(m){clickstream[m]=clickstream[m]||function(){clickstream.push([m].concat([].slice.call(arguments)))}})</script>
 *   <script async src="https://GATEWAY/tracker.js" data-write-key="WRITE_KEY"></script>
 * Attributes: data-write-key (required), data-host (default: where this file came from),
 * data-auto-page ("false" turns off automatic page views), data-respect-dnt ("true": send
 * nothing when the browser asks not to be tracked: Do-Not-Track or Global Privacy Control),
 * data-flush-ms (default 1000).
 */
(function () {
  'use strict';
  var VERSION = '0.1.0';
  var MAX_QUEUE = 1000;
  var MAX_BATCH = 100;
  // Browsers refuse keepalive requests and beacons over 64 KiB: stay well under.
  var MAX_BATCH_BYTES = 60000;
  var MAX_ATTEMPTS = 6;
  var script = document.currentScript || document.querySelector('script[data-write-key]');
  if (!script) return;
  var writeKey = script.getAttribute('data-write-key');
  var host = script.getAttribute('data-host') || new URL(script.src).origin;
  var autoPage = script.getAttribute('data-auto-page') !== 'false';
  var flushMs = Number(script.getAttribute('data-flush-ms')) || 1000;
  var nav = navigator;
  var optedOut = script.getAttribute('data-respect-dnt') === 'true' &&
    (nav.doNotTrack === '1' || window.doNotTrack === '1' || nav.globalPrivacyControl === true);

  var queue = [];
  var attempts = 0;
  var timer = null;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === 'x' ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  // Identity: the anonymous id lives in a first-party cookie and in localStorage, so it
  // survives either being cleared; the user id in localStorage after identify().
  function readCookie(name) {
    var match = document.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
    return match ? decodeURIComponent(match[1]) : null;
  }
  function writeCookie(name, value, days) {
    var expires = new Date(Date.now() + days * 864e5).toUTCString();
    document.cookie = name + '=' + encodeURIComponent(value) + '; expires=' + expires +
      '; path=/; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
  }
  function stored(key) {
    try { return localStorage.getItem(key); } catch (e) { return null; }
  }
  function store(key, value) {
    try {
      if (value === null) localStorage.removeItem(key); else localStorage.setItem(key, value);
    } catch (e) { /* storage may be disabled */ }
  }
  function anonymousId() {
    if (optedOut) return null; // no identifier for a browser that asked not to be tracked
    var id = readCookie('cs_aid') || stored('cs_aid');
    if (!id) id = uuid();
    writeCookie('cs_aid', id, 365);
    store('cs_aid', id);
    return id;
  }
  var anonymous = anonymousId();
  var userId = stored('cs_uid');

  function campaign() {
    var params = new URLSearchParams(location.search);
    var out = {};
    [['utm_source', 'source'], ['utm_medium', 'medium'], ['utm_campaign', 'name'],
     ['utm_term', 'term'], ['utm_content', 'content']].forEach(function (pair) {
      var value = params.get(pair[0]);
      if (value) out[pair[1]] = value;
    });
    return out;
  }

  function pageContext() {
    return {
      path: location.pathname, url: location.href, search: location.search,
      title: document.title, referrer: document.referrer
    };
  }

  function enqueue(message) {
    if (optedOut) return;
    message.messageId = uuid();
    message.anonymousId = anonymous;
    if (userId) message.userId = message.userId || userId;
    message.timestamp = new Date().toISOString();
    message.context = {
      page: pageContext(),
      campaign: campaign(),
      locale: nav.language,
      library: { name: 'clickstream-tracker', version: VERSION }
    };
    queue.push(message);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    schedule(queue.length >= MAX_BATCH ? 0 : flushMs);
  }

  function body(batch) {
    return JSON.stringify({ batch: batch, writeKey: writeKey, sentAt: new Date().toISOString() });
  }

  // The next batch off the queue: at most MAX_BATCH events and MAX_BATCH_BYTES of JSON (an
  // event larger than that alone goes alone; the gateway will say what is wrong with it).
  function takeBatch() {
    var batch = [];
    var bytes = 100;
    while (queue.length && batch.length < MAX_BATCH) {
      var size = JSON.stringify(queue[0]).length + 1;
      if (batch.length && bytes + size > MAX_BATCH_BYTES) break;
      batch.push(queue.shift());
      bytes += size;
    }
    return batch;
  }

  function post(text, keepalive) {
    return fetch(host + '/v1/batch', {
      method: 'POST', body: text, keepalive: keepalive,
      headers: { 'Content-Type': 'text/plain' }
    });
  }

  function schedule(delay) {
    if (timer !== null) {
      if (delay > 0) return;
      clearTimeout(timer);
    }
    timer = setTimeout(function () { timer = null; flush(); }, delay);
  }

  // Sends up to MAX_BATCH events; a network error, 429 or 5xx puts them back and retries
  // with exponential backoff; another 4xx is the batch's own fault and drops it.
  function flush() {
    if (!queue.length) return;
    var batch = takeBatch();
    post(body(batch), false).then(function (response) {
      if (response.ok || (response.status >= 400 && response.status < 500 && response.status !== 429)) {
        attempts = 0;
        if (queue.length) schedule(0);
      } else {
        retry(batch);
      }
    }, function () { retry(batch); });
  }

  function retry(batch) {
    attempts += 1;
    if (attempts > MAX_ATTEMPTS) {
      // Give this batch up; the rest of the queue gets its own chances.
      attempts = 0;
      if (queue.length) schedule(flushMs);
      return;
    }
    queue = batch.concat(queue).slice(0, MAX_QUEUE);
    schedule(Math.min(30000, 1000 * Math.pow(2, attempts)));
  }

  // Leaving the page: hand what is queued to the browser, which sends it after unload.
  function flushOnExit() {
    while (queue.length) {
      var text = body(takeBatch());
      var sent = nav.sendBeacon && nav.sendBeacon(host + '/v1/batch', new Blob([text], { type: 'text/plain' }));
      if (!sent) post(text, true).catch(function () { /* the page is gone */ });
    }
  }
  window.addEventListener('pagehide', flushOnExit);
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') flushOnExit();
  });

  var api = {
    page: function (name, properties) {
      var props = Object.assign(pageContext(), properties || {});
      enqueue({ type: 'page', name: name || document.title, properties: props });
    },
    track: function (event, properties) {
      enqueue({ type: 'track', event: String(event), properties: properties || {} });
    },
    identify: function (id, traits) {
      if (id !== undefined && id !== null && id !== '') {
        userId = String(id);
        store('cs_uid', userId);
      }
      enqueue({ type: 'identify', userId: userId, traits: traits || {} });
    },
    reset: function () {
      userId = null;
      store('cs_uid', null);
      store('cs_aid', null);
      writeCookie('cs_aid', '', -1);
      anonymous = anonymousId();
    },
    flush: flush,
    anonymousId: function () { return anonymous; }
  };

  // Single-page apps: a page view whenever the History API changes the path.
  var lastPath = location.pathname + location.search;
  function onNavigation() {
    var path = location.pathname + location.search;
    if (path !== lastPath) {
      lastPath = path;
      if (autoPage) api.page();
    }
  }
  ['pushState', 'replaceState'].forEach(function (method) {
    var original = history[method];
    history[method] = function () {
      var result = original.apply(this, arguments);
      onNavigation();
      return result;
    };
  });
  window.addEventListener('popstate', onNavigation);

  // Calls made before the tracker loaded, then the real API.
  var waiting = Array.isArray(window.clickstream) ? window.clickstream : [];
  window.clickstream = api;
  if (autoPage) api.page();
  waiting.forEach(function (call) {
    if (api[call[0]]) api[call[0]].apply(api, call.slice(1));
  });
})();
