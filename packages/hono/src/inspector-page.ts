/**
 * The inspector's page: one HTML shell, one stylesheet, one script, served as they are (no build,
 * no CDN). The script builds every piece of data into the DOM as text (`textContent`, `append` of
 * strings, `setAttribute` of plain attributes), never as markup.
 */

const attr = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!,
  )

/** The page, with `base` (ending in `/`) as the prefix of its script, styles and API. */
export function inspectorHtml(base: string): string {
  const b = attr(base)
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Substate inspector</title>
<link rel="stylesheet" href="${b}inspector.css">
</head>
<body data-base="${b}">
<header>
<h1>Substate <span>inspector</span></h1>
<nav>
<a href="#/subjects" data-view="subjects">Subjects</a>
<a href="#/events" data-view="events">Events</a>
<a href="#/cascades" data-view="cascades">Cascades</a>
<a href="#/metrics" data-view="metrics">Metrics</a>
<a href="#/dead-letters" data-view="dead-letters">Dead letters</a>
</nav>
<span id="status" class="status">loading…</span>
</header>
<main id="view"></main>
<script src="${b}inspector.js"></script>
</body>
</html>
`
}

export const INSPECTOR_CSS: string = `
:root { --bg: #f6f7f9; --fg: #1d2330; --muted: #6b7385; --line: #dde1e8; --card: #fff;
  --accent: #3557d6; --bad: #c3362b; --ok: #23845a; --flash: #fff3b0;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 24px; padding: 10px 20px; background: #1d2330; color: #fff; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header h1 span { color: #9fb0ff; font-weight: 400; }
nav { display: flex; gap: 4px; }
nav a { color: #cfd6e6; text-decoration: none; padding: 6px 10px; border-radius: 6px; }
nav a:hover { background: #2c3447; }
nav a.active { background: #3557d6; color: #fff; }
.status { margin-left: auto; font-size: 12px; color: #9aa3b5; }
.status.live::before { content: "● "; color: #4cd08a; }
.status.down::before { content: "● "; color: #ff6b5e; }
main { padding: 16px 20px; max-width: 1400px; }
h2 { font-size: 18px; margin: 4px 0 12px; word-break: break-all; }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
form.bar { display: flex; gap: 8px; align-items: center; margin-bottom: 12px; flex-wrap: wrap; }
form.bar label { color: var(--muted); font-size: 12px; }
input { font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; min-width: 200px; }
button { font: inherit; padding: 5px 12px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 6px; cursor: pointer; }
button.ghost { background: #fff; color: var(--accent); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 4px 0; overflow: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #fafbfc; position: sticky; top: 0; }
tr:last-child td { border-bottom: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.payload { white-space: pre-wrap; word-break: break-all; max-width: 560px; }
.muted { color: var(--muted); }
.empty { padding: 14px; color: var(--muted); }
a { color: var(--accent); }
ul.names { list-style: none; margin: 0; padding: 0; columns: 3 280px; }
ul.names li { padding: 3px 10px; break-inside: avoid; word-break: break-all; }
ul.names li.new { animation: flash 1.5s ease-out; }
tr.flash td { animation: flash 1.5s ease-out; }
@keyframes flash { from { background: var(--flash); } to { background: transparent; } }
tr.skipped td { color: var(--muted); font-style: italic; background: #f3f4f7; }
.badge { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 11px; background: #eef1fb; color: var(--accent); margin-left: 6px; }
.badge.bad { background: #fdecea; color: var(--bad); }
.badge.ok { background: #e6f5ee; color: var(--ok); }
.counters { font-size: 12px; color: var(--muted); }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 22px; }
ul.tree { padding: 8px 12px; }
ul.tree li { position: relative; padding: 4px 0; }
ul.tree ul li::before { content: ""; position: absolute; left: -14px; top: 0; height: 16px; width: 10px; border-left: 1px solid var(--line); border-bottom: 1px solid var(--line); }
.node { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.node .type { font-weight: 600; }
.bar-wrap { width: 120px; height: 6px; background: #eef0f4; border-radius: 3px; display: inline-block; }
.bar-fill { height: 6px; background: var(--accent); border-radius: 3px; min-width: 2px; }
.failure { color: var(--bad); margin: 2px 0 0 4px; font-size: 12px; }
`

// Plain ES2020 for the browser. No backticks or dollar-brace in here (this is a template literal).
export const INSPECTOR_JS: string = String.raw`'use strict'
;(function () {
  var base = document.body.dataset.base || './'
  var view = document.getElementById('view')
  var statusEl = document.getElementById('status')
  var cleanups = []
  var subjectPattern = '**'
  var eventFilter = { type: '', subject: '' }
  var MAX_ROWS = 300

  function api(path, query) {
    var url = new URL(base + path, location.href)
    if (query) Object.keys(query).forEach(function (k) { if (query[k]) url.searchParams.set(k, query[k]) })
    return url.toString()
  }
  function getJson(path, query) {
    return fetch(api(path, query), { headers: { accept: 'application/json' } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + r.status)
        return body
      })
    })
  }
  // Builds an element; strings among children become text nodes, never markup.
  function h(tag, props) {
    var el = document.createElement(tag)
    if (props) Object.keys(props).forEach(function (k) {
      var v = props[k]
      if (v === undefined || v === null || v === false) return
      if (k === 'class') el.className = v
      else if (k === 'text') el.textContent = v
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v)
      else el.setAttribute(k, String(v))
    })
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i])
    return el
  }
  function append(el, c) {
    if (c === undefined || c === null || c === false) return
    if (Array.isArray(c)) c.forEach(function (x) { append(el, x) })
    else el.append(c instanceof Node ? c : String(c))
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild) }
  function link(hash, label) { return h('a', { href: '#/' + hash }, label) }
  function subjectLink(name) { return link('subject/' + encodeURIComponent(name), name) }
  function cascadeLink(id, label) { return link('cascade/' + encodeURIComponent(id), label || short(id)) }
  function short(id) { return id.length > 14 ? id.slice(0, 6) + '…' + id.slice(-6) : id }
  function pad(n, w) { var s = String(n); while (s.length < w) s = '0' + s; return s }
  function clock(ms) {
    var d = new Date(ms)
    return pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2) + '.' + pad(d.getMilliseconds(), 3)
  }
  function json(v) { try { return JSON.stringify(v) } catch (e) { return String(v) } }
  function fmtMs(v) { return v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1) }
  function setStatus(text, cls) { statusEl.textContent = text; statusEl.className = 'status ' + (cls || '') }
  function table(headers, rows) {
    return h('table', null,
      h('thead', null, h('tr', null, headers.map(function (t) { return h('th', null, t) }))),
      rows instanceof HTMLTableSectionElement ? rows : h('tbody', null, rows))
  }
  function card() { return h('div', { class: 'card' }, Array.prototype.slice.call(arguments)) }
  function failed(message) { clear(view); view.append(h('p', { class: 'empty' }, message)) }
  function stream(path, query, handlers) {
    var es = new EventSource(api(path, query))
    es.onopen = function () { setStatus('live', 'live') }
    es.onerror = function () { setStatus('reconnecting…', 'down') }
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (m) { handlers[name](JSON.parse(m.data)) })
    })
    cleanups.push(function () { es.close() })
    return es
  }

  // ---- Subjects ----
  function subjectsView() {
    var input = h('input', { name: 'pattern', value: subjectPattern, placeholder: 'glob, e.g. device:*', 'aria-label': 'subject glob' })
    var info = h('span', { class: 'counters' })
    var list = h('ul', { class: 'names' })
    var names = new Set()
    function add(name, fresh) {
      if (names.has(name)) return
      names.add(name)
      list.append(h('li', { class: fresh ? 'new' : null, 'data-subject': name }, subjectLink(name)))
      info.textContent = names.size + ' subject' + (names.size === 1 ? '' : 's')
    }
    function load() {
      subjectPattern = input.value.trim() || '**'
      cleanups.forEach(function (f) { f() }); cleanups = []
      clear(list); names.clear()
      getJson('api/subjects', { pattern: subjectPattern }).then(function (r) {
        r.names.forEach(function (n) { add(n, false) })
        info.textContent = names.size + ' subject' + (names.size === 1 ? '' : 's') +
          (r.truncated ? ' (first ' + r.names.length + ')' : '') + (r.source === 'events' ? ' seen in events' : '')
        // New subjects show up as their events arrive.
        stream('api/events', { subject: subjectPattern }, {
          batch: function (b) { b.events.forEach(function (e) { add(e.subject, true) }) },
        })
      }, function (e) { info.textContent = e.message })
    }
    var form = h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); load() } },
      h('label', null, 'Subjects matching'), input, h('button', { type: 'submit' }, 'Search'), info)
    clear(view)
    view.append(h('h2', null, 'Subjects'), form, card(list))
    load()
  }

  function subjectView(name) {
    var props = h('tbody'), ext = h('tbody'), events = h('tbody')
    var updated = h('span', { class: 'counters' }, 'loading…')
    var previous = { props: {}, ext: {} }
    function fill(tbody, values, before) {
      clear(tbody)
      var keys = Object.keys(values).sort()
      if (keys.length === 0) tbody.append(h('tr', null, h('td', { colspan: 2, class: 'muted' }, 'none')))
      keys.forEach(function (k) {
        var v = json(values[k])
        var changed = !(k in before) || json(before[k]) !== v
        tbody.append(h('tr', { class: changed ? 'flash' : null, 'data-prop': k },
          h('td', { class: 'mono' }, k), h('td', { class: 'mono payload' }, v)))
      })
    }
    function eventRow(e) {
      return h('tr', null, h('td', { class: 'mono' }, clock(e.time)), h('td', null, e.type),
        h('td', { class: 'mono' }, e.propertyName || ''), h('td', null, cascadeLink(e.originId)),
        h('td', { class: 'mono payload' }, e.payload))
    }
    clear(view)
    view.append(
      h('h2', null, h('span', { class: 'muted' }, 'Subject '), h('span', { id: 'subject-name' }, name)), updated,
      h('h3', null, 'Properties'), card(h('table', { id: 'props' }, h('thead', null, h('tr', null, h('th', null, 'property'), h('th', null, 'value'))), props)),
      h('h3', null, 'Ext properties'), card(h('table', { id: 'ext' }, h('thead', null, h('tr', null, h('th', null, 'property'), h('th', null, 'value'))), ext)),
      h('h3', null, 'Recent events'), card(h('table', { id: 'subject-events' }, h('thead', null, h('tr', null,
        ['time', 'type', 'property', 'cascade', 'payload'].map(function (t) { return h('th', null, t) }))), events)))
    stream('api/subject/stream', { name: name }, {
      state: function (s) {
        fill(props, s.props, previous.props)
        fill(ext, s.ext, previous.ext)
        previous = s
        s.events.forEach(function (e) { events.insertBefore(eventRow(e), events.firstChild) })
        while (events.childNodes.length > 50) events.removeChild(events.lastChild)
        updated.textContent = 'updated ' + clock(Date.now())
      },
    })
  }

  // ---- Live events ----
  function eventsView() {
    var type = h('input', { name: 'type', value: eventFilter.type, placeholder: 'type glob, e.g. device.*', 'aria-label': 'type glob' })
    var subject = h('input', { name: 'subject', value: eventFilter.subject, placeholder: 'subject glob', 'aria-label': 'subject glob' })
    var counters = h('span', { class: 'counters', id: 'event-counters' })
    var pause = h('button', { type: 'button', class: 'ghost' }, 'Pause')
    var body = h('tbody', { id: 'event-rows' })
    var received = 0, skipped = 0, paused = false, pending = [], scheduled = false
    function count() { counters.textContent = received + ' shown, ' + skipped + ' skipped' + (paused ? ' (paused)' : '') }
    function render() {
      scheduled = false
      var frag = document.createDocumentFragment()
      // Newest first: the last batch goes on top.
      for (var i = pending.length - 1; i >= 0; i--) {
        var b = pending[i]
        for (var j = b.events.length - 1; j >= 0; j--) {
          var e = b.events[j]
          frag.append(h('tr', { 'data-type': e.type },
            h('td', { class: 'mono' }, clock(e.time)), h('td', null, e.type), h('td', null, subjectLink(e.subject)),
            h('td', null, cascadeLink(e.originId)), h('td', { class: 'mono payload' }, e.payload)))
        }
        if (b.skipped > 0) frag.append(h('tr', { class: 'skipped' }, h('td', { colspan: 5 }, '… ' + b.skipped + ' earlier event' + (b.skipped === 1 ? '' : 's') + ' skipped')))
      }
      pending = []
      body.insertBefore(frag, body.firstChild)
      while (body.childNodes.length > MAX_ROWS) body.removeChild(body.lastChild)
      count()
    }
    function connect() {
      eventFilter = { type: type.value.trim(), subject: subject.value.trim() }
      cleanups.forEach(function (f) { f() }); cleanups = []
      clear(body); received = 0; skipped = 0; pending = []; count()
      stream('api/events', eventFilter, {
        ready: function () { counters.dataset.ready = eventFilter.type + '|' + eventFilter.subject },
        batch: function (b) {
          if (paused) { skipped += b.events.length + b.skipped; count(); return }
          received += b.events.length; skipped += b.skipped
          pending.push(b)
          // Render once per frame whatever the rate of batches.
          if (!scheduled) { scheduled = true; requestAnimationFrame(render) }
        },
      })
    }
    pause.addEventListener('click', function () { paused = !paused; pause.textContent = paused ? 'Resume' : 'Pause'; count() })
    var form = h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); connect() } },
      h('label', null, 'Type'), type, h('label', null, 'Subject'), subject, h('button', { type: 'submit' }, 'Filter'), pause, counters)
    clear(view)
    view.append(h('h2', null, 'Live events'), form,
      card(table(['time', 'type', 'subject', 'cascade', 'payload'], body)))
    connect()
  }

  // ---- Cascades ----
  function cascadesView() {
    var body = h('tbody')
    var origin = h('input', { name: 'origin', placeholder: 'origin id', 'aria-label': 'origin id' })
    function load() {
      getJson('api/cascades').then(function (r) {
        clear(body)
        if (r.cascades.length === 0) body.append(h('tr', null, h('td', { colspan: 5, class: 'muted' }, 'no cascade recorded yet')))
        r.cascades.forEach(function (c) {
          body.append(h('tr', null, h('td', { class: 'mono' }, clock(c.startedAt)), h('td', null, cascadeLink(c.originId, c.type)),
            h('td', null, subjectLink(c.subject)), h('td', { class: 'num' }, c.events),
            h('td', { class: 'num' }, c.failures ? h('span', { class: 'badge bad' }, c.failures) : '0')))
        })
      }, function (e) { failed(e.message) })
    }
    clear(view)
    view.append(h('h2', null, 'Cascades'),
      h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); if (origin.value.trim()) location.hash = '#/cascade/' + encodeURIComponent(origin.value.trim()) } },
        h('label', null, 'Open origin id'), origin, h('button', { type: 'submit' }, 'Open'),
        h('button', { type: 'button', class: 'ghost', onclick: load }, 'Refresh')),
      card(table(['started', 'first event', 'subject', 'events', 'failures'], body)))
    load()
  }

  function cascadeView(id) {
    clear(view)
    var tree = h('ul', { class: 'tree', id: 'cascade-tree' })
    view.append(h('h2', null, h('span', { class: 'muted' }, 'Cascade '), h('span', { class: 'mono' }, id)),
      h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); load() } }, h('button', { type: 'submit', class: 'ghost' }, 'Refresh')),
      card(tree))
    function load() {
      getJson('api/cascade', { origin: id }).then(function (r) {
        clear(tree)
        if (r.events.length === 0) { tree.append(h('li', { class: 'muted' }, 'no event of this cascade was recorded')); return }
        var byId = {}, children = {}, roots = []
        r.events.forEach(function (e) { byId[e.id] = e })
        r.events.forEach(function (e) {
          if (e.parentId && byId[e.parentId]) (children[e.parentId] = children[e.parentId] || []).push(e)
          else roots.push(e)
        })
        var longest = 0
        r.events.forEach(function (e) { if (e.durationMs > longest) longest = e.durationMs })
        function node(e) {
          var fill = h('div', { class: 'bar-fill' })
          fill.style.width = longest > 0 && e.durationMs !== null ? Math.max(2, (100 * e.durationMs) / longest) + '%' : '2px'
          var li = h('li', { 'data-event': e.id },
            h('div', { class: 'node' },
              h('span', { class: 'type' }, e.type), subjectLink(e.subject),
              h('span', { class: 'bar-wrap', title: 'dispatch duration' }, fill),
              h('span', { class: 'mono' }, fmtMs(e.durationMs) + ' ms'),
              e.failures.length ? h('span', { class: 'badge bad' }, e.failures.length + ' failed') : h('span', { class: 'badge ok' }, 'ok'),
              h('span', { class: 'mono muted' }, clock(e.startedAt))),
            h('div', { class: 'mono payload muted' }, e.payload),
            e.failures.map(function (f) {
              return h('div', { class: 'failure' }, f.handler + ': ' + f.error + ' (' + f.attempts + ' attempt' + (f.attempts === 1 ? '' : 's') +
                (f.attempts > 1 ? ', ' + (f.attempts - 1) + ' retr' + (f.attempts === 2 ? 'y' : 'ies') : '') + (f.deadLettered ? ', dead-lettered' : '') + ')')
            }))
          var kids = children[e.id]
          if (kids) li.append(h('ul', null, kids.map(node)))
          return li
        }
        roots.forEach(function (e) { tree.append(node(e)) })
      }, function (e) { failed(e.message) })
    }
    load()
  }

  // ---- Metrics and dead letters ----
  function metricsView() {
    var body = h('tbody')
    function load() {
      getJson('api/metrics').then(function (r) {
        clear(body)
        var names = Object.keys(r.handlers).sort()
        if (names.length === 0) body.append(h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'no handler has run yet')))
        names.forEach(function (n) {
          var m = r.handlers[n]
          body.append(h('tr', null, h('td', { class: 'mono' }, n), h('td', { class: 'num' }, m.processed),
            h('td', { class: 'num' }, m.failed ? h('span', { class: 'badge bad' }, m.failed) : '0'), h('td', { class: 'num' }, m.retried),
            h('td', { class: 'num' }, fmtMs(m.avgMs)), h('td', { class: 'num' }, fmtMs(m.p99Ms))))
        })
      }, function (e) { failed(e.message) })
    }
    clear(view)
    view.append(h('h2', null, 'Handler metrics'),
      h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); load() } }, h('button', { type: 'submit', class: 'ghost' }, 'Refresh')),
      card(table(['handler', 'processed', 'failed', 'retried', 'avg ms', 'p99 ms'], body)))
    load()
    var timer = setInterval(load, 2000)
    cleanups.push(function () { clearInterval(timer) })
  }

  function deadLettersView() {
    var holder = h('div')
    var info = h('span', { class: 'counters' })
    var handler = h('input', { name: 'handler', placeholder: 'any', 'aria-label': 'handler' })
    var type = h('input', { name: 'type', placeholder: 'any', 'aria-label': 'type' })
    var subject = h('input', { name: 'subject', placeholder: 'any', 'aria-label': 'subject' })
    function load() {
      var query = { handler: handler.value.trim(), type: type.value.trim(), subject: subject.value.trim() }
      getJson('api/dead-letters', query).then(function (r) {
        clear(holder)
        if (!r.configured) {
          info.textContent = ''
          holder.append(h('p', { class: 'empty' }, 'No dead letters to list: give the container a sink that lists them (createMemoryDeadLetters, storageDeadLetters) or pass deadLetters to createInspector.'))
          return
        }
        info.textContent = r.items.length + ' dead letter' + (r.items.length === 1 ? '' : 's') + (r.truncated ? ' (the newest ' + r.items.length + ')' : '')
        var rows = r.items.map(function (d) {
          return h('tr', null, h('td', { class: 'mono' }, clock(d.at)), h('td', { class: 'mono' }, d.handler), h('td', null, d.event.type),
            h('td', null, subjectLink(d.event.subject)), h('td', { class: 'num' }, d.attempts), h('td', null, d.error),
            h('td', null, cascadeLink(d.event.originId)), h('td', { class: 'mono payload' }, d.event.payload), h('td', { class: 'mono' }, d.id || ''))
        })
        if (rows.length === 0) rows = h('tr', null, h('td', { colspan: 9, class: 'muted' }, 'none'))
        holder.append(card(table(['at', 'handler', 'type', 'subject', 'attempts', 'error', 'cascade', 'payload', 'id'], rows)))
      }, function (e) { failed(e.message) })
    }
    var form = h('form', { class: 'bar', onsubmit: function (ev) { ev.preventDefault(); load() } },
      h('label', null, 'Handler'), handler, h('label', null, 'Type'), type, h('label', null, 'Subject'), subject,
      h('button', { type: 'submit' }, 'Filter'), info)
    clear(view)
    view.append(h('h2', null, 'Dead letters'), form, holder)
    load()
  }

  function route() {
    cleanups.forEach(function (f) { f() }); cleanups = []
    setStatus('')
    var hash = location.hash.replace(/^#\/?/, '')
    var slash = hash.indexOf('/')
    var name = slash < 0 ? hash : hash.slice(0, slash)
    var arg = ''
    try { arg = slash < 0 ? '' : decodeURIComponent(hash.slice(slash + 1)) } catch (e) { name = '' }
    var tab = { subject: 'subjects', cascade: 'cascades' }[name] || name || 'subjects'
    document.querySelectorAll('nav a').forEach(function (a) { a.classList.toggle('active', a.dataset.view === tab) })
    if (name === 'subject' && arg) subjectView(arg)
    else if (name === 'events') eventsView()
    else if (name === 'cascades') cascadesView()
    else if (name === 'cascade' && arg) cascadeView(arg)
    else if (name === 'metrics') metricsView()
    else if (name === 'dead-letters') deadLettersView()
    else subjectsView()
  }
  window.addEventListener('hashchange', route)
  route()
})()
`
