import { h } from "./dom.ts";

const SVG = "http://www.w3.org/2000/svg";
const RADIUS = 21;
const CIRCUMFERENCE = 2 * Math.PI * RADIUS;

function circle(className: string): SVGCircleElement {
  const element = document.createElementNS(SVG, "circle");
  for (const [key, value] of Object.entries({ class: className, cx: 26, cy: 26, r: RADIUS, fill: "none", "stroke-width": 4 })) element.setAttribute(key, String(value));
  return element;
}

/** A ring that empties until the next passcode, with the seconds left in it. */
export function countdownRing(): { element: HTMLElement; update(secondsLeft: number, periodSeconds: number): void } {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 52 52");
  svg.setAttribute("aria-hidden", "true");
  const left = circle("left");
  left.setAttribute("stroke-dasharray", String(CIRCUMFERENCE));
  left.setAttribute("stroke-linecap", "round");
  svg.append(circle("track"), left);
  const seconds = h("span", { "data-seconds-left": "" });
  const element = h("div", { class: "ring", role: "timer" }, seconds);
  element.prepend(svg);
  return {
    element,
    update(secondsLeft, periodSeconds) {
      seconds.textContent = String(secondsLeft);
      element.setAttribute("aria-label", `next passcode in ${secondsLeft} seconds`);
      element.classList.toggle("low", secondsLeft <= 5);
      left.style.strokeDashoffset = String(CIRCUMFERENCE * (1 - secondsLeft / periodSeconds));
    },
  };
}
