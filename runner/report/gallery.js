// The sweep gallery's page logic (inlined into index.html by runner/report/gallery.py; no build step).
// Every image's facts are one JSON array; filters and the order apply to all of it, and only the
// page shown becomes DOM, so 10,000 images cost about what 100 do. The URL's hash holds the state:
// index.html#seed=3&sort=clip_score&page=2 (a swept parameter's label = a value, sort = a parameter's
// label or a metric's name, page = from 1).
const data = JSON.parse(document.getElementById('gallery-data').textContent);
const filters = [...document.querySelectorAll('select[data-filter]')];
const order = document.querySelector('select[data-sort]');
const main = document.querySelector('.items');
let page = 1;

function url(relative) { return relative.split('/').map(encodeURIComponent).join('/'); }
function short(text) { return text.length <= 80 ? text : text.slice(0, 79).trimEnd() + '\u2026'; }
function number(value) { return String(parseFloat(value.toPrecision(4))); }
function shown(row, i) { return data.params[i].values[row.v[i]]; }

// The rows that pass every filter, in the chosen order: over the whole sweep, not the page.
function selection() {
  const chosen = filters.map(f => f.value);
  const rows = data.rows.filter(row => chosen.every((value, i) => !value || shown(row, i) === value));
  const key = order ? order.value : '';
  const i = Number(key.slice(1));
  if (key[0] === 'p') rows.sort((a, b) => a.v[i] - b.v[i]);  // a parameter's values in their listed order
  if (key[0] === 'm') {  // best first; unscored last (sort is stable: ties keep the run's order)
    const score = row => row.m[i] ?? -Infinity;
    rows.sort((a, b) => score(b) - score(a));
  }
  return rows;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);  // strings become text nodes: nothing from a run is parsed as HTML
  return node;
}

function figure(row) {
  const settings = data.params.map((p, i) => p.label + '=' + shown(row, i));
  data.metrics.forEach((name, i) => { if (row.m[i] != null) settings.push(name + '=' + number(row.m[i])); });
  const attributes = {class: row.status === 'ok' || row.status === 'skipped' ? 'item' : 'item problem'};
  data.params.forEach((p, i) => { attributes['data-v' + i] = shown(row, i); });
  data.metrics.forEach((name, i) => { if (row.m[i] != null) attributes['data-m' + i] = String(row.m[i]); });
  const items = settings.map(setting => element('li', {}, setting));
  const prompt = data.prompts[row.prompt_id];
  if (prompt) items.push(element('li', {}, element('span', {class: 'prompt', title: prompt}, short(prompt))));
  let picture;
  if (row.file !== undefined) {
    // loading="lazy": of this page, the browser fetches only the thumbnails near the screen
    const img = element('img', {class: 'thumb', loading: 'lazy', decoding: 'async', src: url(row.thumb),
                                alt: 'job ' + row.job + ': ' + settings.join(', ')});
    watch(img);
    picture = element('a', {href: url(row.file)}, img);
  } else {
    picture = element('pre', {}, row.status + ': ' + row.why);
  }
  const time = row.time == null ? '' : ' \u00b7 ' + row.time.toFixed(2) + ' s';
  const facts = ['job ' + row.job + ' \u00b7 seed ' + (row.seed ?? 'none') + time + ' \u00b7 ' + row.status + ' \u00b7 ',
                 element('a', {href: url(row.job + '/' + data.run_json)}, data.run_json)];
  return element('figure', attributes, picture, element('figcaption', {}, element('ul', {}, ...items), ...facts));
}

// Each thumbnail marks whether it decoded (data-loaded), and <body data-loaded> counts those of the
// page that did: broken links show at once.
let loaded = 0;
function watch(img) {
  const mark = () => {
    img.dataset.loaded = img.naturalWidth > 0 ? 'yes' : 'no';
    if (img.naturalWidth > 0) document.body.dataset.loaded = ++loaded;
  };
  img.addEventListener('load', mark, {once: true});
  img.addEventListener('error', mark, {once: true});
}

function render() {
  const rows = selection();
  const pages = Math.max(1, Math.ceil(rows.length / data.page_size));
  page = Math.min(Math.max(1, page), pages);
  loaded = 0;
  document.body.dataset.loaded = 0;
  const start = (page - 1) * data.page_size;
  main.replaceChildren(...rows.slice(start, start + data.page_size).map(figure));
  document.getElementById('shown').textContent = rows.length + ' of ' + data.rows.length + ' shown';
  for (const nav of document.querySelectorAll('.pager')) {
    nav.querySelector('.page').textContent = 'page ' + page + ' of ' + pages;
    nav.querySelector('[data-go="-1"]').disabled = page === 1;
    nav.querySelector('[data-go="1"]').disabled = page === pages;
  }
  document.body.dataset.page = page;
  document.body.dataset.pages = pages;
  history.replaceState(null, '', stateHash());
}

function stateHash() {
  const state = new URLSearchParams();
  filters.forEach(f => { if (f.value) state.set(f.dataset.key, f.value); });
  if (order && order.value) state.set('sort', order.selectedOptions[0].dataset.key);
  if (page > 1) state.set('page', page);
  const text = state.toString();
  return text ? '#' + text : location.pathname + location.search;
}

function readHash() {
  const state = new URLSearchParams(location.hash.slice(1));
  filters.forEach(f => {
    const wanted = state.get(f.dataset.key);
    f.value = [...f.options].some(option => option.value === wanted) ? wanted : '';
  });
  const wanted = state.get('sort');
  if (order) {
    const options = [...order.options];
    const found = options.find(o => o.dataset.metric === wanted) ?? options.find(o => o.dataset.key === wanted);
    order.value = found ? found.value : '';
  }
  page = parseInt(state.get('page'), 10) || 1;
}

filters.forEach(f => f.addEventListener('change', () => { page = 1; render(); }));
if (order) order.addEventListener('change', () => { page = 1; render(); });
for (const button of document.querySelectorAll('.pager button')) {
  button.addEventListener('click', () => { page += Number(button.dataset.go); render(); window.scrollTo(0, main.offsetTop); });
}
window.addEventListener('hashchange', () => { readHash(); render(); });
readHash();
render();
