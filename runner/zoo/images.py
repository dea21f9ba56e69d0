"""The input images of the card's workflows, drawn procedurally: a landscape and its inpainting mask,
a portrait and a figure for the canny-conditioned workflows, a jungle scene for image-to-image. Deterministic: the same pixels every
build."""
from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 512


def draw_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    drawings = {
        "inpaint.png": _draw_landscape,
        "inpaint_mask.png": _draw_mask,
        "vermeer.png": _draw_portrait,
        "canny_source.png": _draw_figure,
        "img2img-init.png": _draw_jungle,
    }
    for name, draw in drawings.items():
        # Fixed PNG options and no metadata: same pixels -> same bytes.
        draw().save(folder / name, format="PNG", optimize=False, compress_level=6)


def _draw_landscape():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(300):  # sky, lighter towards the horizon
        draw.line([(0, y), (IMAGE_SIZE, y)], fill=(70 + y // 3, 130 + y // 4, 230))
    draw.ellipse([360, 60, 440, 140], fill=(255, 220, 90))
    draw.polygon([(0, 300), (140, 150), (270, 290), (380, 170), (512, 300)], fill=(95, 100, 120))
    draw.polygon([(120, 190), (140, 150), (162, 195)], fill=(245, 245, 250))
    draw.rectangle([0, 290, IMAGE_SIZE, IMAGE_SIZE], fill=(70, 150, 60))
    draw.polygon([(200, 512), (250, 300), (270, 300), (330, 512)], fill=(170, 140, 100))
    draw.rectangle([80, 330, 96, 420], fill=(100, 70, 40))
    draw.ellipse([40, 250, 136, 350], fill=(40, 110, 45))
    return image


def _draw_mask():
    from PIL import Image, ImageDraw

    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse([150, 180, 380, 400], fill=255)
    draw.ellipse([300, 150, 420, 280], fill=255)
    return image


def _draw_portrait():
    """A figure after Vermeer's girl with a pearl earring: dark ground, turban, strong edges."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (20, 25, 22))
    draw = ImageDraw.Draw(image)
    draw.polygon([(110, 512), (170, 380), (350, 370), (430, 512)], fill=(160, 130, 60))
    draw.ellipse([170, 140, 340, 380], fill=(235, 200, 170))
    draw.pieslice([150, 90, 350, 290], 180, 360, fill=(40, 70, 160))
    draw.polygon([(300, 170), (380, 200), (360, 330), (320, 250)], fill=(230, 200, 90))
    draw.ellipse([210, 230, 236, 248], fill=(50, 35, 30))
    draw.ellipse([272, 230, 298, 248], fill=(50, 35, 30))
    draw.line([(254, 250), (246, 300), (262, 304)], fill=(150, 100, 80), width=4)
    draw.arc([220, 300, 290, 345], 20, 160, fill=(170, 60, 60), width=6)
    draw.ellipse([178, 320, 200, 342], fill=(250, 250, 245), outline=(90, 90, 90), width=2)
    return image


def _draw_figure():
    """A standing figure and a house: bold outlines for the canny adapter."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (240, 236, 225))
    draw = ImageDraw.Draw(image)
    ink = (15, 15, 20)
    draw.rectangle([40, 250, 230, 470], outline=ink, width=8)
    draw.polygon([(25, 255), (135, 140), (245, 255)], outline=ink, width=8)
    draw.rectangle([110, 370, 160, 470], fill=(120, 60, 30), outline=ink, width=6)
    draw.ellipse([330, 90, 410, 170], fill=(230, 190, 160), outline=ink, width=6)
    draw.line([(370, 170), (370, 340)], fill=ink, width=10)
    draw.line([(300, 230), (440, 230)], fill=ink, width=10)
    draw.line([(370, 340), (320, 470)], fill=ink, width=10)
    draw.line([(370, 340), (420, 470)], fill=ink, width=10)
    return image


def _draw_jungle():
    """Leaves, trunks and a clearing: broad colour areas for image-to-image to keep or redraw."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (30, 70, 40))
    draw = ImageDraw.Draw(image)
    draw.ellipse([140, 260, 380, 520], fill=(150, 160, 90))  # the clearing
    for x, width in ((40, 36), (200, 24), (420, 44)):
        draw.rectangle([x, 0, x + width, IMAGE_SIZE], fill=(80, 55, 35))
    for i in range(24):
        cx, cy = (i * 97) % IMAGE_SIZE, (i * 61) % 260
        draw.ellipse([cx - 40, cy - 18, cx + 40, cy + 18], fill=(40 + (i * 7) % 60, 120 + (i * 13) % 80, 50))
    draw.ellipse([236, 330, 276, 370], fill=(235, 235, 240))  # an astronaut's helmet
    draw.rectangle([240, 370, 272, 440], fill=(220, 220, 225))
    return image
