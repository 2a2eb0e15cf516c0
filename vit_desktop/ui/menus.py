"""The File, View and Help menus (the Model and Device menus are the model control's)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence

from . import help
from .recent_models import RecentModels
from .teach_dialog import open_teach_dialog


def action(window, menu, text: str, slot, shortcut=None) -> QAction:
    act = QAction(text, window)
    if isinstance(shortcut, (list, tuple)):
        act.setShortcuts([QKeySequence(k) for k in shortcut])
    elif shortcut:
        act.setShortcut(QKeySequence(shortcut))
    act.triggered.connect(slot)
    menu.addAction(act)
    return act


def build_file_menu(win) -> None:
    f = win.menuBar().addMenu("&File")
    files = win.files
    action(win, f, "&Open…", files.open_files, QKeySequence.StandardKey.Open)
    action(win, f, "Open &Folder…", files.open_folder, "Ctrl+Shift+O")
    win.recent_menu = f.addMenu("Open &Recent")
    win.fill_recent()
    f.addSeparator()
    action(win, f, "&Export Results…", files.export_results, "Ctrl+E")
    action(win, f, "&Save Overlay…", files.save_overlay, QKeySequence.StandardKey.Save)
    action(win, f, "&Copy Overlay", files.copy_overlay, "Ctrl+Shift+C")
    action(win, f, "&Paste", win.intake.paste, QKeySequence.StandardKey.Paste)
    f.addSeparator()
    action(win, f, "New C&lassifier…", lambda: open_teach_dialog(win), "Ctrl+Shift+N")
    f.addSeparator()
    action(win, f, "&Quit", win.close, QKeySequence.StandardKey.Quit)


def build_view_and_help_menus(win) -> None:
    win.recent_models = RecentModels(win)  # Model › Recent (the Model menu is the model control's)
    mb = win.menuBar()
    v = mb.addMenu("&View")
    for dock in win.docks.values():
        v.addAction(dock.toggleViewAction())
    win.grid_action = action(win, v, "Patch &Grid", win.set_grid, "G")
    win.grid_action.setCheckable(True)
    win.grid_action.setChecked(win.view.show_grid)
    v.addSeparator()
    view = win.view
    action(win, v, "Zoom &In", lambda: view.zoom_by(1.25), [QKeySequence.StandardKey.ZoomIn, "Ctrl+="])
    action(win, v, "Zoom &Out", lambda: view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
    action(win, v, "&Fit", view.fit, "Ctrl+0")
    action(win, v, "&Actual Size (1:1)", view.actual_size, "Ctrl+1")
    action(win, v, "F&ull Screen", win.toggle_full_screen, [QKeySequence.StandardKey.FullScreen, "F11"])
    h = mb.addMenu("&Help")
    action(win, h, "&Keyboard Shortcuts", lambda: help.show_shortcuts(win, win.menuBar()), "Ctrl+/")
    action(win, h, "Open &Log Folder", win.files.open_log_folder)
    action(win, h, "&About ViT Desktop", win.files.about)
