"""The ops pages' share of the console frame: their nav links and styles (kept apart to keep html.py small)."""

OPS_LINKS = ('<a href="/console/rules">Rules</a>', '<a href="/console/team">Team</a>',
             '<a href="/console/health">Health</a>')

OPS_CSS = """
nav.tabs{display:flex;gap:.8rem;flex-wrap:wrap;margin-bottom:.6rem}nav.tabs a.on{font-weight:700;color:#1d2433}
.editor textarea{width:100%;font:13px/1.4 ui-monospace,monospace;padding:.5rem;margin:.3rem 0}
.editor input,.editor select{max-width:100%}.editor .actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
table.listing,table.diff{font:13px/1.4 ui-monospace,monospace;background:#fff;margin:.5rem 0}
table.listing td,table.diff td{padding:0 .5rem;border:0;white-space:pre-wrap;word-break:break-all}
table.listing td.ln{color:#5a6272;text-align:right;width:3.5rem;user-select:none}
table.listing tr.bad{background:#fbe4e4}table.listing tr.bad td.ln{color:#b42318;font-weight:700}
table.listing tr.why td{color:#b42318;font-family:system-ui,sans-serif;padding-bottom:.3rem}
table.listing .fix{color:#1d2433}ul.problems li{margin:.2rem 0}
table.diff tr.add{background:#e3f5e8}table.diff tr.del{background:#fbe4e4}table.diff tr.hunk{color:#2f6fde}
tr.fail{background:#fbe4e4}tr.pass td:nth-child(2){color:#0a7a31}
svg.chart{max-width:720px;display:block;margin:.4rem 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:.6rem}
.tile{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:.7rem}
.tile span{display:block;font-size:.8rem;color:#5a6272}.tile b{display:block;font-size:1.4rem}
.tile small{display:block}form.ooo input[type=date]{max-width:10rem}details.ooo summary{cursor:pointer;color:#2f6fde}form.ooo{flex-wrap:wrap}
@media (max-width:600px){#reps,#versions,#changes,#sources{display:block;overflow-x:auto}#reps td.ooo-cell{max-width:9rem}form.ooo input{max-width:8.5rem}svg.chart{font-size:10px}}
#reps td.ooo-cell{max-width:18rem}
form.profile{display:flex;flex-direction:column;gap:.3rem;margin:.4rem 0}form.profile input{width:100%;max-width:16rem}form.profile label{display:flex;flex-direction:column}.field-err{color:#a4161a;font-size:.85rem}
"""
