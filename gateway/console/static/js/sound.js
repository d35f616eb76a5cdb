// Alarm tones made with the Web Audio API: no audio file, nothing downloaded.

let ctx = null;
let muted = localStorage.getItem("eldercare.muted") === "1";
export const soundStats = { beeps: 0 };

/** Browsers only allow sound after a user gesture: call this from a click or key press. */
export function unlockAudio() {
  try {
    ctx ??= new AudioContext();
    if (ctx.state === "suspended") ctx.resume();
  } catch {
    ctx = null;
  }
}

export function isMuted() {
  return muted;
}

export function setMuted(value) {
  muted = value;
  localStorage.setItem("eldercare.muted", value ? "1" : "0");
}

function tone(at, freq, length, volume) {
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "square";
  osc.frequency.setValueAtTime(freq, at);
  gain.gain.setValueAtTime(0.0001, at);
  gain.gain.exponentialRampToValueAtTime(volume, at + 0.015);
  gain.gain.exponentialRampToValueAtTime(0.0001, at + length);
  osc.connect(gain).connect(ctx.destination);
  osc.start(at);
  osc.stop(at + length + 0.02);
}

/** Three rising two-tone pulses for a new critical alert; one soft pulse as a reminder. */
export function alarm(kind = "new") {
  if (muted) return;
  soundStats.beeps += 1;
  if (!ctx) return;
  const now = ctx.currentTime + 0.02;
  if (kind === "new") {
    for (let i = 0; i < 3; i++) {
      tone(now + i * 0.42, 880, 0.16, 0.22);
      tone(now + i * 0.42 + 0.18, 1175, 0.18, 0.22);
    }
  } else {
    tone(now, 988, 0.14, 0.12);
    tone(now + 0.2, 988, 0.14, 0.12);
  }
}
