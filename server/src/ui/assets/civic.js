// Civic dashboard: signing an approval in the browser. The board member's key file is read
// here, turned into a WebCrypto Ed25519 key, used once over the query's fingerprint, and
// dropped; only the public key and the signature go into the form. Without this script (or
// without Ed25519 in the browser) the page shows the `civic-board approve` command instead.
"use strict";

// What `civic_policies::manifest::approval_message` signs: a tag, a NUL byte, the fingerprint.
const APPROVAL_TAG = "civic-approval/v1\u0000";
// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
  0x04, 0x22, 0x04, 0x20];

function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64urlToBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function sign(file, fingerprint) {
  const text = (await file.text()).trim();
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new Error("that file is not a board key (civic-board keygen writes 64 hex digits)");
  }
  const der = new Uint8Array(48);
  der.set(PKCS8_PREFIX, 0);
  for (let i = 0; i < 32; i++) der[16 + i] = parseInt(text.substr(2 * i, 2), 16);
  let key;
  try {
    key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  } finally {
    der.fill(0);
  }
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const publicKey = hex(base64urlToBytes(jwk.x));
  const message = new TextEncoder().encode(APPROVAL_TAG + fingerprint);
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, key, message);
  return JSON.stringify({ key: publicKey, signature: hex(signature) });
}

function setUp() {
  const button = document.getElementById("sign-button");
  if (!button || !window.crypto || !crypto.subtle) return;
  for (const el of document.querySelectorAll(".needs-js")) el.hidden = false;
  const input = document.getElementById("sign-key");
  const status = document.getElementById("sign-status");
  const output = document.getElementById("signature");
  button.addEventListener("click", async () => {
    const file = input.files && input.files[0];
    if (!file) {
      status.textContent = "Choose your board key file first.";
      input.focus();
      return;
    }
    status.textContent = "Signing…";
    try {
      output.value = await sign(file, button.dataset.fingerprint);
      status.textContent = "Signed. Check the reason, then choose Approve.";
    } catch (e) {
      status.textContent = "Could not sign here (" + e.message + "). Run the command above and paste its output instead.";
    } finally {
      input.value = "";
    }
  });
}

document.addEventListener("DOMContentLoaded", setUp);
