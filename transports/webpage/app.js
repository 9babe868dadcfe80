// chat-relay web chat: speaks the native bodies as JSON over /ws
// (subprotocol chat-relay.v1.json). No build step, no dependencies.
// Every room remembers the last seq it showed, so a reconnect resumes with
// hello.resume and a seq gap shows a "missed N messages" marker that can
// fetch the gap with `history`. After a relay restart (a new epoch in
// `welcome`) it says so once per room instead of counting missed messages,
// as chat-client does (clients/state.py).
"use strict";

const $ = (id) => document.getElementById(id);
const SUBPROTOCOL = "chat-relay.v1.json";
const HISTORY_MAX = 500;

const state = {
  ws: null,
  nick: null,          // confirmed by welcome/renamed
  wanted: null,        // nick asked for in hello
  password: null,
  welcomed: false,     // at least one welcome on this page: reconnect on close
  quitting: false,
  retry: 0,
  current: null,
  rooms: new Map(),    // name -> {lastSeq, members:Set, el, unread, gapEl}
  maxText: null,       // the relay's text limit in bytes (welcome.max_text)
  commands: null,      // the slash-command table (/commands.json), shared with nc and chat-client
  pings: new Map(),    // ping id -> sent at (ms)
  nextPing: 1,
  epoch: null,         // the relay's history epoch (welcome.epoch): a change is a restart
};

// Rendering --------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    const box = el("div", "room-log");
    box.hidden = true;
    $("messages").appendChild(box);
    r = {
      lastSeq: null, members: new Set(), el: box, unread: 0, gapEls: [],
      gone: false,       // history_gap for our resume: the jump to the next seq is gone
      restarted: false,  // the epoch changed: the next `joined` tells the restart
      quietGap: false,   // restart told, seq went on: the next jump is what it said is gone
      toldGap: false,    // restart told: the resume's history_gap says nothing new
      colours: new Map(), // nick key -> colour, in order of appearance (nickColour)
    };
    state.rooms.set(name, r);
  }
  return r;
}

function scrolledDown() {
  const m = $("messages");
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}

function append(name, node, before) {
  const r = room(name);
  const stick = scrolledDown();
  if (before) r.el.insertBefore(node, before); else r.el.appendChild(node);
  if (name === state.current) {
    if (stick) $("messages").scrollTop = $("messages").scrollHeight;
  } else if (node.classList.contains("msg") && !node.classList.contains("earlier")) {
    r.unread += 1;
    renderRooms();
  }
}

function line(cls, text, ts) {
  const p = el("div", "line " + cls);
  p.appendChild(el("time", "", clock(ts)));
  p.appendChild(document.createTextNode(text));
  return p;
}

// Lines about no particular room go to the room on screen, or stand alone
// before any room is joined (creating a room here would join it on resume).
function toScreen(name, node) {
  const target = name || state.current;
  if (target) append(target, node);
  else $("messages").appendChild(node);
}

function info(name, text) {
  toScreen(name, line("info", text));
}

// Nick colours: chat-client's palette (clients/render.py NICK_COLOURS) slot for
// slot, so a nick has the same colour there and here, each darkened where needed
// to read on the white message pane: every one at least 4.5:1 against #fff,
// every pair at least 35 apart in CIELAB (chat-client's: 29), as
// tests/test_web_page.py measures.
const NICK_COLOURS = [
  "#e5134a", // red
  "#0f8717", // green
  "#4264da", // blue
  "#cc4908", // orange
  "#7812b0", // purple
  "#1a7da3", // cyan
  "#d513ac", // magenta
  "#9e652f", // brown
  "#737a07", // olive
  "#3a816b", // teal
];
const MAX_COLOURED = 1000; // nicks whose colour a room remembers; past it, the plain hash

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

// zlib.crc32, so the hash picks the slot chat-client picks.
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A nick's preferred slot (nicks are ASCII: lower case is the relay's nick key).
function nickSlot(nick) {
  return crc32(new TextEncoder().encode(nick.toLowerCase())) % NICK_COLOURS.length;
}

// A nick's colour in a room: its preferred one unless another nick of the room
// has it, then the next free one (a hash alone gives 8 nicks a shared colour
// more often than not); once given, it keeps it.
function nickColour(name, nick) {
  const preferred = nickSlot(nick);
  const r = state.rooms.get(name);
  if (!r) return NICK_COLOURS[preferred];
  const key = nick.toLowerCase();
  let colour = r.colours.get(key);
  if (colour) return colour;
  const taken = new Set(r.colours.values());
  colour = NICK_COLOURS[preferred];
  for (let step = 0; step < NICK_COLOURS.length; step++) {
    const c = NICK_COLOURS[(preferred + step) % NICK_COLOURS.length];
    if (!taken.has(c)) { colour = c; break; }
  }
  if (r.colours.size < MAX_COLOURED) r.colours.set(key, colour);
  return colour;
}

function msgLine(m, name) {
  const mine = m.from === state.nick;
  const p = el("div", "line msg" + (mine ? " mine" : "") + (m.action ? " action" : ""));
  p.appendChild(el("time", "", clock(m.ts)));
  // An action (`/me waves`, IRC's CTCP ACTION) reads "* carol waves".
  if (m.action) p.appendChild(document.createTextNode("* "));
  const from = el("span", "from", m.from);
  from.style.color = nickColour(name, m.from); // CSSOM: allowed by style-src 'self'
  p.appendChild(from);
  p.appendChild(document.createTextNode(m.action ? " " + m.text : m.text));
  p.title = "#" + m.seq;
  return p;
}

function renderRooms() {
  const ul = $("room-list");
  ul.replaceChildren();
  for (const [name, r] of state.rooms) {
    const li = el("li", name === state.current ? "current" : "");
    li.appendChild(el("span", "", "#" + name));
    if (r.unread) li.appendChild(el("span", "unread", String(r.unread)));
    li.onclick = () => { show(name); $("rooms-pane").classList.remove("open"); };
    ul.appendChild(li);
  }
}

function renderMembers() {
  const ul = $("member-list");
  ul.replaceChildren();
  const r = state.rooms.get(state.current);
  $("member-count").textContent = r ? String(r.members.size) : "";
  if (!r) return;
  for (const nick of [...r.members].sort((a, b) => a.localeCompare(b))) {
    ul.appendChild(el("li", nick === state.nick ? "me" : "", nick));
  }
}

function show(name) {
  state.current = name;
  for (const [n, r] of state.rooms) r.el.hidden = n !== name;
  const r = state.rooms.get(name);
  if (r) r.unread = 0;
  $("title").textContent = name ? "#" + name : "chat-relay";
  renderRooms();
  renderMembers();
  $("messages").scrollTop = $("messages").scrollHeight;
}

function setStatus(text, offline) {
  $("status").textContent = text;
  $("status").classList.toggle("offline", !!offline);
}

// Messages and gaps ----------------------------------------------------------

function showMsg(m) {
  const r = room(m.room);
  if (r.lastSeq !== null && m.seq <= r.lastSeq) return; // already shown
  if (r.quietGap && r.lastSeq !== null && m.seq > r.lastSeq + 1) r.lastSeq = m.seq - 1;
  r.quietGap = false;
  if (r.lastSeq !== null && m.seq > r.lastSeq + 1) gapMarker(m.room, r.lastSeq, m.seq, r.gone);
  r.gone = false;
  append(m.room, msgLine(m, m.room));
  r.lastSeq = m.seq;
}

// A gap marker stands for the messages after seq `after` and before seq `upto`.
// `gone`: the relay said its history no longer has them, so there is nothing to load.
function gapMarker(name, after, upto, gone) {
  const r = room(name);
  const g = el("div", "gap");
  r.gapEls.push(g);
  renderGap(g, name, after, upto, gone);
  append(name, g);
}

function renderGap(g, name, after, upto, gone) {
  const missed = upto - after - 1;
  const what = `missed ${missed} message${missed === 1 ? "" : "s"}`;
  g.dataset.after = String(after);
  g.dataset.upto = String(upto);
  g.hidden = false; // a restart's fill (restartFill) shows only what it could not fill
  delete g.dataset.pending;
  if (gone) {
    g.replaceChildren(document.createTextNode(`${what}: no longer in the relay's history`));
    return;
  }
  g.replaceChildren(document.createTextNode(what + " "));
  const b = el("button", "", "load");
  b.onclick = () => {
    b.disabled = true;
    g.dataset.pending = "1";
    send({ t: "history", room: name, after: after, limit: Math.min(missed, HISTORY_MAX) });
  };
  g.appendChild(b);
}

// The messages said after a restart and before we came back (seq 1..upto-1):
// fetched at once into a hidden marker under the restart line, which shows
// only if history no longer has them all.
function restartFill(name, upto) {
  const r = room(name);
  const g = el("div", "gap");
  g.hidden = true;
  g.dataset.after = "0";
  g.dataset.upto = String(upto);
  g.dataset.pending = "1";
  r.gapEls.push(g);
  append(name, g);
  send({ t: "history", room: name, after: 0, limit: Math.min(upto - 1, HISTORY_MAX) });
}

// A relay restart, as chat-client tells it (clients/state.py _on_joined): once
// per room, with no count, since nothing was missed; what history no longer has
// is what this line says is gone.
function restarted(name, seq) {
  const r = room(name);
  info(name, `#${name}: the relay restarted; messages before it are gone`);
  r.toldGap = true;
  if (seq < r.lastSeq) {
    // The room's numbering started over: what it has now is all after the restart.
    if (seq > 0) restartFill(name, seq + 1);
    r.lastSeq = seq;
  } else {
    r.quietGap = true; // the seq went on (the hub alone restarted)
  }
}

// A history page answers the marker whose load is pending: its messages go
// before the marker, and the marker shrinks to what is still missing.
function fillGap(h) {
  const r = room(h.room);
  const g = r.gapEls.find((e) => e.dataset.pending === "1");
  if (!g) return;
  let after = Number(g.dataset.after);
  const upto = Number(g.dataset.upto);
  let first = null;
  let firstEl = null;
  for (const m of h.messages) {
    if (m.seq <= after || m.seq >= upto) continue;
    const p = msgLine(m, h.room);
    if (first === null) { first = m.seq; firstEl = p; }
    append(h.room, p, g);
    after = m.seq;
  }
  if (first === null || first > Number(g.dataset.after) + 1) {
    // Some are gone for good (the relay's history starts later): say so.
    renderGap(g, h.room, Number(g.dataset.after), first === null ? upto : first, true);
    // What came after the hole was inserted above the marker. (Not found by its
    // seq: after a restart the log holds two messages #1.)
    if (firstEl !== null) g.parentNode.insertBefore(g, firstEl);
  } else if (after + 1 >= upto) {
    r.gapEls = r.gapEls.filter((e) => e !== g);
    g.remove();
  } else {
    renderGap(g, h.room, after, upto, false); // a partial page: more to load
  }
}

// A page the user asked for with /history: shown as it is, after a header line.
function showHistory(h) {
  const n = h.messages.length;
  info(h.room, `history of #${h.room}: ${n} message${n === 1 ? "" : "s"}` +
               (h.more ? " (older ones too: /history N shows the N latest)" : ""));
  for (const m of h.messages) append(h.room, msgLine(m, h.room));
}

// A join's replay (a history page with replay:true, right after `joined`): the
// room's latest messages, under an "earlier messages" divider and above an end
// divider. Their seqs are <= joined.seq, so they leave lastSeq (gaps) alone.
function showReplay(h) {
  if (!h.messages || !h.messages.length) return;
  append(h.room, el("div", "divider", "earlier messages"));
  for (const m of h.messages) {
    const p = msgLine(m, h.room);
    p.classList.add("earlier");
    append(h.room, p);
  }
  append(h.room, el("div", "divider end", "end of earlier messages"));
}

// Connection -----------------------------------------------------------------

function send(body) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(body));
}

function hello() {
  const body = { t: "hello", v: 1, nick: state.wanted, rooms: [] };
  const resume = {};
  for (const [name, r] of state.rooms) {
    if (r.lastSeq !== null) resume[name] = r.lastSeq; else body.rooms.push(name);
  }
  if (Object.keys(resume).length) body.resume = resume;
  if (!body.rooms.length && !body.resume) body.rooms = ["lobby"];
  if (state.password) body.password = state.password;
  send(body);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  setStatus("connecting…");
  const ws = new WebSocket(`${scheme}//${location.host}/ws`, SUBPROTOCOL);
  state.ws = ws;
  ws.onopen = () => { setStatus("online"); hello(); };
  ws.onmessage = (ev) => {
    let body;
    try { body = JSON.parse(ev.data); } catch (e) { return; }
    handle(body);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.nick = null;
    for (const [name, r] of state.rooms) lostConnection(name, r);
    renderMembers();
    if (state.quitting || !state.welcomed) {
      setStatus("offline", true);
      return;
    }
    const delay = Math.min(30, 2 ** state.retry);
    state.retry += 1;
    setStatus(`offline: reconnecting in ${delay}s`, true);
    setTimeout(connect, delay * 1000);
  };
}

// What the old connection owed a room is forgotten; lastSeq stays for the resume.
function lostConnection(name, r) {
  r.members.clear();
  r.gone = r.quietGap = r.toldGap = false;
  for (const g of r.gapEls) {
    if (g.dataset.pending !== "1") continue;
    // Its page will not come: the marker offers the load again (a restart's fill too).
    renderGap(g, name, Number(g.dataset.after), Number(g.dataset.upto), false);
  }
}

function handle(b) {
  switch (b.t) {
    case "welcome":
      state.nick = b.nick;
      if (Number.isInteger(b.max_text)) state.maxText = b.max_text;
      state.welcomed = true;
      state.retry = 0;
      if (Number.isInteger(b.epoch)) {
        // A new epoch: the relay restarted without its history (--history-db keeps it).
        if (state.epoch !== null && b.epoch !== state.epoch) {
          for (const r of state.rooms.values()) r.restarted = r.lastSeq !== null;
        }
        state.epoch = b.epoch;
      }
      try { localStorage.setItem("chat-relay.nick", b.nick); } catch (e) { /* private mode */ }
      $("login").hidden = true;
      $("chat").hidden = false;
      $("say").focus();
      break;
    case "joined": {
      const r = room(b.room);
      r.members = new Set(b.members);
      if (r.lastSeq === null) {
        r.lastSeq = b.seq; // a fresh join starts at the room's seq
      } else if (r.restarted || b.seq < r.lastSeq) {
        restarted(b.room, b.seq); // a seq gone back is a restart too (a relay with no epoch)
      }
      r.restarted = false;
      if (!state.current || !state.rooms.has(state.current)) show(b.room);
      renderRooms();
      renderMembers();
      break;
    }
    case "parted": {
      const r = state.rooms.get(b.room);
      if (r) { r.el.remove(); state.rooms.delete(b.room); }
      if (state.current === b.room) show(state.rooms.keys().next().value || null);
      renderRooms();
      break;
    }
    case "presence": {
      const r = room(b.room);
      if (b.event === "join") { r.members.add(b.nick); info(b.room, `${b.nick} joined`); }
      else if (b.event === "part") {
        r.members.delete(b.nick);
        info(b.room, `${b.nick} left` + (b.reason ? ` (${b.reason})` : ""));
      }
      else if (b.event === "nick") {
        r.members.delete(b.nick); r.members.add(b.new);
        info(b.room, `${b.nick} is now known as ${b.new}`);
      }
      if (b.room === state.current) renderMembers();
      break;
    }
    case "renamed":
      state.nick = b.nick;
      state.wanted = b.nick;
      info(null, `you are now ${b.nick}`);
      renderMembers();
      break;
    case "msg":
      showMsg(b);
      break;
    case "history":
      if (b.replay === true) showReplay(b);
      else if (room(b.room).gapEls.some((e) => e.dataset.pending === "1")) fillGap(b);
      else showHistory(b);
      break;
    case "pong": {
      const sent = state.pings.get(b.id);
      state.pings.delete(b.id);
      info(null, sent === undefined ? "pong" : `pong: ${Date.now() - sent} ms round trip`);
      break;
    }
    case "whisper": {
      const text = b.from === state.nick ? `→ ${b.to}: ${b.text}` : `← ${b.from}: ${b.text}`;
      toScreen(null, line("whisper", text, b.ts));
      break;
    }
    case "members": {
      const r = room(b.room);
      r.members = new Set(b.members);
      info(b.room, `members of #${b.room}: ${b.members.join(", ")}`);
      renderMembers();
      break;
    }
    case "rooms":
      info(null, "rooms: " + Object.entries(b.rooms || {})
        .map(([n, c]) => `#${n} (${c})`).join(", "));
      break;
    case "notice":
      info(null, b.text);
      break;
    case "away":
      info(null, b.text ? `${b.nick} is away: ${b.text}` : `${b.nick} is back`);
      break;
    case "ping":
      send({ t: "pong", id: b.id });
      break;
    case "error":
      onError(b);
      break;
    default:
      break;
  }
}

function onError(b) {
  if (!state.nick && (b.code === "nick_taken" || b.code === "nick_invalid" ||
                      b.code === "auth_failed")) {
    if (state.welcomed) {
      // Reconnecting while the old session still holds the nick: try again later.
      if (state.ws) state.ws.close();
      return;
    }
    $("login-error").textContent = b.text; // the same socket takes another hello
    $("login").hidden = false;
    $("chat").hidden = true;
    return;
  }
  if (b.code === "shutting_down") {
    // Planned: the operator stopped the relay. News, not a fault; onclose reconnects.
    info(null, "the relay is shutting down; reconnecting when it is back");
    return;
  }
  if (b.code === "history_gap") {
    // The gap marker (or the restart line) says it where the messages are missing.
    const r = state.rooms.get(b.room);
    if (r && b.ref === "hello" && r.toldGap) r.toldGap = false;
    else if (r && b.ref === "hello") r.gone = true;
    else if (!r || !r.gapEls.some((e) => e.dataset.pending === "1")) {
      info(b.room, `history no longer reaches that far: ${b.text}`);
    }
    return;
  }
  toScreen(b.room && state.rooms.has(b.room) ? b.room : null,
           line("err", `error ${b.code}: ${b.text}`));
}

// Input ----------------------------------------------------------------------

// The slash commands, as the shared table (transports/commands.py) names them.
fetch("/commands.json").then((r) => r.json()).then((t) => { state.commands = t; })
  .catch(() => { /* /help then says less; the commands still work */ });

function canonical(name) {
  const t = state.commands;
  if (!t) return name;
  const c = t.commands.find((c) => c.name === name || c.aliases.includes(name));
  return c ? c.name : null;
}

function helpText() {
  const t = state.commands;
  if (!t) return "commands: /join ROOM, /part [ROOM], /msg NICK TEXT, /nick NAME, /who [ROOM], " +
                 "/me TEXT, /rooms, /history [N], /ping, /help, /quit [REASON]";
  return "commands: " + t.commands.map((c) => `${c.usage}: ${c.help}`).join(" · ") +
         " · " + t.plain_line;
}

// /history [N] or /history ROOM [N]: one number alone is N (as in nc and chat-client).
function historyArgs(words) {
  const t = state.commands || { history_default: 20, history_max: 500 };
  const isNum = (w) => /^[0-9]+$/.test(w);
  let name = state.current;
  let n = null;
  if (words.length > 2) return null;
  if (words.length === 2) { name = words[0]; n = words[1]; }
  else if (words.length === 1 && isNum(words[0])) n = words[0];
  else if (words.length === 1) name = words[0];
  if (n !== null && (!isNum(n) || n.length > 6 || Number(n) < 1 || Number(n) > t.history_max)) {
    return { error: `N is 1 to ${t.history_max}` };
  }
  return { room: name, limit: n === null ? t.history_default : Number(n) };
}

function command(text) {
  const [typed, ...rest] = text.slice(1).split(" ");
  const arg = rest.join(" ").trim();
  const cmd = canonical(typed.toLowerCase());
  switch (cmd) {
    case "nick": send({ t: "nick", nick: arg }); break;
    case "join": send({ t: "join", room: arg.replace(/^#/, "") }); break;
    case "part": send({ t: "part", room: arg.replace(/^#/, "") || state.current }); break;
    case "msg": {
      const [to, ...words] = rest;
      send({ t: "whisper", to: to, text: words.join(" ") });
      break;
    }
    case "who": send({ t: "who", room: arg.replace(/^#/, "") || state.current }); break;
    case "rooms": send({ t: "rooms" }); break;
    case "history": {
      const h = historyArgs(rest.filter((w) => w));
      if (!h) info(null, "error: usage /history [N] or /history ROOM [N]");
      else if (h.error) info(null, `error: ${h.error}`);
      else if (!h.room) info(null, "error: you are in no room: /join ROOM first");
      else send({ t: "history", room: h.room.replace(/^#/, ""), limit: h.limit });
      break;
    }
    case "ping": {
      const id = state.nextPing++;
      state.pings.set(id, Date.now());
      send({ t: "ping", id: id });
      break;
    }
    case "me":
      if (arg && state.current) send({ t: "say", room: state.current, text: arg, action: true });
      break;
    case "quit":
      state.quitting = true;
      send(arg ? { t: "bye", reason: arg } : { t: "bye" });
      break;
    case "help": info(null, helpText()); break;
    default: info(null, `unknown command /${typed}; ` + helpText());
  }
}

// The relay's limit, in UTF-8 bytes as the relay counts them; null: not known yet.
function tooLong(text) {
  if (state.maxText === null) return null;
  const size = new TextEncoder().encode(text).length;
  return size > state.maxText ? size : null;
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  state.wanted = $("nick").value.trim();
  state.password = $("password").value || null;
  state.quitting = false;
  if (!state.welcomed) {
    for (const name of $("rooms").value.split(",")) {
      const n = name.trim().replace(/^#/, "");
      if (n) room(n);
    }
  }
  if (state.ws) hello(); else connect();
});

$("say-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("say").value;
  if (!text.trim()) return;
  const said = text.replace(/^\//, "");
  const size = text.startsWith("/") && !text.startsWith("//") ? null : tooLong(said);
  if (size !== null) {
    // Refused here, whole: the text stays in the box to be shortened.
    toScreen(null, line("err", `not sent: your message is ${size} bytes; ` +
                               `this relay takes at most ${state.maxText}`));
    return;
  }
  if (text.startsWith("/") && !text.startsWith("//")) command(text);
  else if (state.current) send({ t: "say", room: state.current, text: said });
  $("say").value = "";
});

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("join-room").value.trim().replace(/^#/, "");
  if (name) send({ t: "join", room: name });
  $("join-room").value = "";
});

$("toggle-rooms").onclick = () => $("rooms-pane").classList.toggle("open");
$("toggle-members").onclick = () => $("members-pane").classList.toggle("open");

try { $("nick").value = localStorage.getItem("chat-relay.nick") || ""; } catch (e) { /* ok */ }
