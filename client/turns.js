// The conversation list: one record and one <li> per turn, keyed by session and turn (the server
// numbers turns from 1 in every session), and the part of a cut answer that was heard.

const DEFAULT_WORDS_PER_S = 2.5;   // speaking rate assumed until a whole answer has been timed

export class TurnList {
  constructor(listElement, allRecords) {
    this.list = listElement;
    this.all = allRecords;          // every record of the page (window.voiceStats.turns)
    this.session = 0;
    this.byId = new Map();
    this.spokenWords = 0;           // words and seconds of answers played in full: the speaking rate
    this.spokenS = 0;
  }

  // A new session: its turn numbers start again at 1, under a heading of their own.
  startSession() {
    this.session += 1;
    this.byId = new Map();
    if (this.session > 1) this.divider(`Reconnected: session ${this.session}`);
  }

  // The server forgot the dialogue (the "New conversation" button): a divider; turn numbers go on.
  newConversation() {
    this.divider("New conversation").scrollIntoView({ block: "nearest" });
  }

  divider(text) {
    const li = document.createElement("li");
    li.className = "session-start";
    li.textContent = text;
    this.list.append(li);
    return li;
  }

  get(id) {
    if (!this.byId.has(id)) {
      const rec = { id, session: this.session, key: `${this.session}:${id}`, audioSamples: 0 };
      this.byId.set(id, rec);
      this.all.push(rec);
    }
    return this.byId.get(id);
  }

  values() { return this.byId.values(); }

  // The answer ended without a cut: its words and duration teach the speaking rate.
  learnRate(turn, sampleRate) {
    if (!turn.assistantText || !turn.audioSamples || turn.heardS !== undefined) return;
    this.spokenWords += words(turn.assistantText).length;
    this.spokenS += turn.audioSamples / sampleRate;
  }

  // A clear cut `turn` after `heardS` seconds of its audio had played: keep the words heard, like
  // the server's context does (its share of the words when all the audio had arrived, otherwise
  // the words that fit in heardS at the speaking rate).
  cut(turn, heardS, sampleRate, complete) {
    turn.heardS = Math.max(0, heardS);
    const all = words(turn.assistantText || "");
    const totalS = turn.audioSamples / sampleRate;
    const rate = this.spokenS > 1 ? this.spokenWords / this.spokenS : DEFAULT_WORDS_PER_S;
    const n = complete && totalS > 0 ? Math.round(all.length * Math.min(1, turn.heardS / totalS))
      : Math.min(all.length, Math.round(turn.heardS * rate));
    turn.heardText = all.slice(0, n).join(" ");
  }

  render(turn) {
    let li = this.list.querySelector(`li[data-turn="${turn.key}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.turn = turn.key;
      this.list.append(li);
    }
    const you = turn.userText || (turn.speechEnd !== undefined
      ? `(speech ${turn.speechStart.toFixed(2)}–${turn.speechEnd.toFixed(2)} s)` : "(speaking…)");
    const cut = turn.heardText !== undefined && turn.assistantText;   // an answer without text stays "(audio)"
    const said = cut ? (turn.heardText ? `${turn.heardText} …` : "…") : turn.assistantText;
    const bot = said || (turn.audio ? "(audio)" : turn.waiting ? "…" : "");
    li.innerHTML = "";
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.textContent = turn.latencyMs !== undefined ? `${turn.latencyMs} ms` : "";
    li.append(latency, line("You", you), line("Assistant", bot));
    if (turn.interrupted) {
      const tag = document.createElement("span");
      tag.className = "interrupted";
      tag.textContent = turn.heardS !== undefined ? "interrupted: the rest was not heard" : "interrupted";
      li.lastChild.append(tag);
    }
    li.scrollIntoView({ block: "nearest" });
  }
}

function words(text) {
  return text.split(/\s+/).filter(Boolean);
}

function line(who, text) {
  const div = document.createElement("div");
  const b = document.createElement("span");
  b.className = "who";
  b.textContent = `${who}:`;
  div.append(b, document.createTextNode(text));
  return div;
}
