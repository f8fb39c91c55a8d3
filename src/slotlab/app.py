"""``slotlab app``: take a scene apart in the browser (Gradio), slot by slot.

:class:`Explorer` holds the model, its data and an optional concept library, and does everything the page shows:
encode a scene (a held-out scene of the model's dataset, or an uploaded image cropped and resized as the model was
trained), draw its reconstruction, segmentation and each slot's mask and content, find the slot that owns a pixel,
edit the slots (remove, keep some, swap in a slot of another scene, insert a concept, move a posed slot) and
decode them. Its methods are plain Python, tested without a browser; :func:`build_app` lays them out as a page, and
:func:`serve` runs it. A fault in a request becomes a message in the page; the server keeps serving.

Every model goes through the registry (:mod:`slotlab.kinds`) and the slot-model protocol: object discovery and LSD
models are edited and decoded, set-prediction models show each slot's predicted object beside its attention.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from slotlab.checkpoints import load_trained
from slotlab.concepts import ConceptLibrary, check_library_model
from slotlab.data.registry import build_dataset, open_dataset
from slotlab.data.transforms import centre_crop, prepare_images, to_model_range, to_uint8
from slotlab.editing import decode_slots, encode_slots, grow_region, insert_slot, pick_slot, remove_slot, replace_slot
from slotlab.errors import DataError, SlotlabError
from slotlab.kinds import kind_of
from slotlab.visualize import PALETTE

try:  # the page's event type; the Explorer itself works without Gradio (the app extra)
    from gradio import SelectData
except ImportError:  # pragma: no cover
    SelectData = Any  # type: ignore[misc,assignment]

DEMO_MODELS = ("slotlab-demo/model", "lsd-demo/lsd/model", "slotlab-demo/lsd/model")
MAKE_ONE = "no model yet: run `slotlab demo --out slotlab-demo` (about 9 minutes on a laptop CPU), then `slotlab app`"


@dataclass
class Scene:
    """One image in slot space and its edit so far."""

    image: Tensor  # [3, R, R] in [-1, 1]
    slots: Tensor  # [K, D] as encoded
    masks: Tensor  # [K, R, R] soft masks
    source: str  # "test scene 3", "upload"
    note: str = ""  # e.g. how an upload was cropped
    edited: Tensor | None = None  # [K', D] the edited slots (None: unedited)
    edited_masks: Tensor | None = None  # [K', R, R] their masks, carried through the edits
    changed: Tensor | None = None  # bool [R, R] where the edits act
    history: list[str] = field(default_factory=list)

    @property
    def current(self) -> Tensor:
        return self.slots if self.edited is None else self.edited

    @property
    def current_masks(self) -> Tensor:
        return self.masks if self.edited_masks is None else self.edited_masks


class Explorer:
    """A trained model and its data, explorable scene by scene (see the module docstring)."""

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        library: str | Path | None = None,
        data: str | Path | None = None,
        seed: int = 0,
    ):
        self.seed = seed
        self.checkpoint = (
            Path(checkpoint) if checkpoint else next((Path(p) for p in DEMO_MODELS if Path(p).is_dir()), None)
        )
        if self.checkpoint is None:
            raise DataError(MAKE_ONE)
        model, self.config = load_trained(self.checkpoint, command="app")
        self.model: Any = cast(Any, model)  # a SlotModel (the registry refused the others)
        self.kind = kind_of(self.model)
        self.resolution: int = self.model.resolution
        self.edits: bool = self.model.draws_images  # set prediction: shown, not edited
        if data is not None:
            self.dataset = open_dataset(self.config.data if self.config else None, data, self.resolution)
        elif self.config is not None:
            self.dataset = build_dataset(self.config.data, "test")
        else:
            raise DataError(f"{self.checkpoint} has no experiment.yaml: pass --data STORE")
        self.library: ConceptLibrary | None = None
        self.library_error = ""  # a library that cannot serve is said in the page; the scenes still can
        if library is not None:
            try:
                self.library = ConceptLibrary.load(library)
                check_library_model(self.library, self.model)
                if int((self.library.sizes > 0).sum()) == 0:
                    raise DataError(f"the concept library {library} is empty: build one from more scenes")
            except SlotlabError as e:
                self.library, self.library_error = None, str(e)
        self.scale = max(1, 256 // self.resolution)  # pixels on screen per model pixel
        self.files = Path(tempfile.mkdtemp(prefix="slotlab-app-"))

    # -- scenes ---------------------------------------------------------------------------------------------------

    def title(self) -> str:
        return f"{self.kind.title} ({type(self.model).__name__}) from {self.checkpoint}, {len(self.dataset)} scenes"

    def encode(self, image: Tensor, source: str, note: str = "") -> Scene:
        """image [3, R, R] in [-1, 1] -> a scene (slot noise from the explorer's seed)."""
        g = torch.Generator().manual_seed(self.seed)
        batch = image[None].to(next(self.model.parameters()).device)
        if self.edits:
            enc = encode_slots(self.model, batch, g)
            return Scene(image, enc.slots[0].cpu(), enc.masks[0].cpu(), source, note)
        enc = self.model.encode(batch, generator=g)
        masks = self.model.slot_masks(enc, self.resolution, "attention")
        return Scene(image, enc.slots[0].cpu(), masks[0].cpu(), source, note)

    def scene(self, index: int) -> Scene:
        """The ``index``-th scene of the explorer's data (the model's held-out test split by default)."""
        if not 0 <= int(index) < len(self.dataset):
            raise DataError(
                f"scene {index} does not exist: there are {len(self.dataset)} (0 to {len(self.dataset) - 1})"
            )
        image = self.dataset[torch.tensor([int(index)])]["image"][0]
        return self.encode(image, f"scene {int(index)}")

    def upload(self, path: str | Path) -> Scene:
        """An image file -> a scene: cropped as the model was trained (its training crop when it fits, else the
        largest centred square) and resized, with a note saying what was done."""
        try:
            with Image.open(path) as im:
                array = np.array(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DataError(f"{Path(path).name} is not an image this page can read ({e})") from None
        h, w = array.shape[:2]
        crop = self.config.data.crop if self.config is not None else None
        if crop is None or crop[0] + crop[2] > h or crop[1] + crop[3] > w:
            crop = centre_crop(h, w, min(h, w)) if (h, w) != (self.resolution, self.resolution) else None
        image = to_model_range(prepare_images(array[None], crop, self.resolution))[0]
        note = (
            "" if crop is None else f"cropped rows {crop[0]}:{crop[0] + crop[2]}, columns {crop[1]}:{crop[1] + crop[3]}"
        )
        if (h, w) != (self.resolution, self.resolution):
            note += f"{'; ' if note else ''}resized {w}x{h} -> {self.resolution}x{self.resolution}"
        return self.encode(image, f"upload {Path(path).name}", note)

    # -- pixels and slots -----------------------------------------------------------------------------------------

    def slot_at(self, scene: Scene, x: int, y: int) -> int:
        """The slot that owns screen pixel (x, y) of a picture drawn at ``self.scale``."""
        return pick_slot(scene.current_masks, pixel=(int(y) // self.scale, int(x) // self.scale))

    # -- edits ----------------------------------------------------------------------------------------------------

    def _require_edits(self) -> None:
        if not self.edits:
            raise DataError(f"{self.kind.title} model predicts objects; it does not draw scenes to edit")

    def _edit(self, scene: Scene, slots: Tensor, masks: Tensor, changed: Tensor, what: str) -> Scene:
        masks = masks / masks.sum(0, keepdim=True).clamp_min(1e-8)  # the slots left share every pixel
        total = changed if scene.changed is None else scene.changed | changed
        return replace(scene, edited=slots, edited_masks=masks, changed=total, history=[*scene.history, what])

    def remove(self, scene: Scene, slot: int) -> Scene:
        self._require_edits()
        masks = scene.current_masks
        i = pick_slot(masks, index=slot)
        rest = [k for k in range(len(masks)) if k != i]
        return self._edit(scene, remove_slot(scene.current, i), masks[rest], masks.argmax(0) == i, f"removed slot {i}")

    def keep(self, scene: Scene, slots: list[int]) -> Scene:
        self._require_edits()
        masks = scene.current_masks
        chosen = sorted({pick_slot(masks, index=s) for s in slots})
        if not chosen:
            raise DataError("choose at least one slot to keep")
        changed = ~torch.isin(masks.argmax(0), torch.tensor(chosen))
        return self._edit(
            scene, scene.current[chosen], masks[chosen], changed, f"kept slots {', '.join(map(str, chosen))}"
        )

    def swap(self, scene: Scene, slot: int, other: Scene, other_slot: int) -> Scene:
        self._require_edits()
        masks = scene.current_masks.clone()
        i, j = pick_slot(masks, index=slot), pick_slot(other.masks, index=other_slot)
        changed = (masks.argmax(0) == i) | (other.masks.argmax(0) == j)
        masks[i] = other.masks[j]
        return self._edit(
            scene,
            replace_slot(scene.current, i, other.slots, j),
            masks,
            changed,
            f"slot {i} swapped for slot {j} of {other.source}",
        )

    def insert_concept(self, scene: Scene, concept: int, member: int = 0) -> Scene:
        """Insert the ``member``-th nearest member of a library concept (its mask marks where it lands)."""
        self._require_edits()
        if self.library is None:
            raise DataError(
                self.library_error
                or "no concept library: start the app with --library LIB (from `slotlab concepts build`)"
            )
        self.library.check_concept(concept, nonempty=True)
        members = self.library.nearest_members(concept)
        row = int(members[min(int(member), len(members) - 1)])
        mask = self.library.masks[row].float()[None, None] / 255
        mask = torch.nn.functional.interpolate(mask, size=(self.resolution,) * 2, mode="bilinear")[0]
        masks = torch.cat([scene.current_masks, mask])
        return self._edit(
            scene,
            insert_slot(scene.current, self.library.slots[row]),
            masks,
            mask[0] > 0.5,
            f"inserted concept {concept}",
        )

    def move(self, scene: Scene, slot: int, y: float, x: float) -> Scene:
        """Move a posed slot (Invariant Slot Attention models) to (y, x) in [-1, 1] of the image."""
        self._require_edits()
        if getattr(self.model.config, "slot_frame", "none") == "none":
            raise DataError(
                "only models with slot frames (Invariant Slot Attention, model.slot_frame) have slots "
                "that carry their position"
            )
        masks = scene.current_masks
        i = pick_slot(masks, index=slot)
        slots = scene.current.clone()
        d = self.model.config.slot_dim
        slots[i, d : d + 2] = torch.tensor([float(y), float(x)]).clamp(-1, 1)
        with torch.no_grad():  # the decoder's masks say where the moved slot now is
            new_masks = self.model.decode(slots[None].to(next(self.model.parameters()).device)).alpha[0, :, 0].cpu()
        changed = (masks.argmax(0) == i) | (new_masks.argmax(0) == i)
        return self._edit(scene, slots, new_masks, changed, f"moved slot {i} to ({y:.2f}, {x:.2f})")

    def reset(self, scene: Scene) -> Scene:
        return replace(scene, edited=None, edited_masks=None, changed=None, history=[])

    # -- decoding -------------------------------------------------------------------------------------------------

    def decode(
        self, scene: Scene, steps: int = 25, seed: int = 0, keep_rest: bool = True, grow: int = 2, progress: Any = None
    ) -> Tensor:
        """The current slots -> image [3, R, R]; ``keep_rest``: only the edited region is redrawn."""
        self._require_edits()
        kwargs: dict[str, Any] = dict(steps=int(steps), seed=int(seed))
        if keep_rest and scene.changed is not None:
            kwargs.update(keep_from=scene.image[None], region=grow_region(scene.changed[None], grow))
        if progress is not None and self.model.decodes_latents:
            kwargs["progress"] = progress
        return decode_slots(self.model, scene.current[None], **kwargs)[0].cpu()

    def reconstruction(self, scene: Scene, steps: int = 25, seed: int = 0) -> Tensor:
        return self.decode(self.reset(scene), steps, seed, keep_rest=False)

    # -- pictures -------------------------------------------------------------------------------------------------

    def picture(self, image: Tensor) -> np.ndarray:
        """[3, R, R] in [-1, 1] -> uint8 [R s, R s, 3] on screen."""
        array = to_uint8(image.cpu()).permute(1, 2, 0).numpy()
        return np.kron(array, np.ones((self.scale, self.scale, 1), np.uint8))

    def overlay(self, scene: Scene, selected: int | None = None) -> np.ndarray:
        """The image with each slot's segment tinted in its colour (the selected one outlined brighter)."""
        labels = scene.current_masks.argmax(0).numpy()
        image = to_uint8(scene.image.cpu()).permute(1, 2, 0).numpy().astype(np.float32)
        colours = PALETTE[1:][labels % (len(PALETTE) - 1)].astype(np.float32)
        alpha = np.where(labels == selected, 0.75, 0.45)[..., None] if selected is not None else 0.45
        out = (1 - alpha) * image + alpha * colours
        return np.kron(out.round().astype(np.uint8), np.ones((self.scale, self.scale, 1), np.uint8))

    def slot_tiles(self, scene: Scene) -> list[tuple[np.ndarray, str]]:
        """Per slot: its mask-weighted content on grey and a caption."""
        masks = scene.current_masks
        tiles = []
        for k in range(masks.shape[0]):
            m = masks[k][None]
            tile = scene.image * m + 0.0 * (1 - m)
            tiles.append((self.picture(tile), f"slot {k}: {float(m.mean()) * 100:.0f} % of the image"))
        return tiles

    def predictions(self, scene: Scene) -> list[list[Any]]:
        """Set prediction: per slot [slot, confidence, object, position], most confident first."""
        from slotlab.visualize import describe_objects

        with torch.no_grad():
            pred = self.model.decode(scene.slots[None].to(next(self.model.parameters()).device))[0].cpu()
        rows = [[k, round(float(pred[k, -1]), 3), *describe_objects(pred[k : k + 1])[0][1:]] for k in range(len(pred))]
        return sorted(rows, key=lambda r: -r[1])

    def save_image(self, image: Tensor, name: str = "edited.png") -> Path:
        path = self.files / name
        Image.fromarray(to_uint8(image.cpu()).permute(1, 2, 0).numpy()).save(path)
        return path

    def save_slots(self, scene: Scene, name: str = "slots.safetensors") -> Path:
        from safetensors.torch import save_file

        path = self.files / name
        save_file(
            {"slots": scene.current.clone(), "encoded_slots": scene.slots.clone()},
            str(path),
            metadata={"checkpoint": str(self.checkpoint), "scene": scene.source, "edits": "; ".join(scene.history)},
        )
        return path


# ---------------------------------------------------------------------------------------------------- the page


def build_app(explorer: Explorer | None, error: str | None = None):
    """The Gradio page of ``explorer`` (or, without a model, a page that says how to make one)."""
    import gradio as gr

    with gr.Blocks(title="slotlab app") as page:
        gr.Markdown("# slotlab: a scene, slot by slot")
        if explorer is None:
            gr.Markdown(f"**{error or MAKE_ONE}**", elem_id="no-model")
            return page
        gr.Markdown(explorer.title(), elem_id="model")
        if explorer.library_error:
            gr.Markdown(f"**{explorer.library_error}**", elem_id="library-error")
        scene_state = gr.State(None)
        with gr.Row():
            index = gr.Number(
                value=0, precision=0, label=f"held-out scene (0 to {len(explorer.dataset) - 1})", elem_id="scene-index"
            )
            load = gr.Button("Show scene", elem_id="load-scene")
            upload = gr.File(label="or upload an image", file_types=["image"], elem_id="upload")
        message = gr.Markdown("", elem_id="message")
        with gr.Row():
            picture = gr.Image(
                label="input: click an object to select its slot",
                format="png",
                interactive=False,
                elem_id="input-image",
            )
            overlay = gr.Image(label="segmentation", format="png", interactive=False, elem_id="overlay")
            decoded = gr.Image(label="reconstruction / edited", format="png", interactive=False, elem_id="decoded")
        selected = gr.Number(value=-1, precision=0, label="selected slot", elem_id="selected-slot")
        with gr.Row(visible=explorer.edits):
            remove = gr.Button("Remove slot", elem_id="remove")
            keep = gr.Textbox(label="keep only slots (e.g. 0,2)", elem_id="keep-slots")
            keep_button = gr.Button("Keep", elem_id="keep")
            reset = gr.Button("Reset edits", elem_id="reset")
        with gr.Row(visible=explorer.edits):
            other_index = gr.Number(value=1, precision=0, label="swap with scene", elem_id="other-scene")
            other_slot = gr.Number(value=0, precision=0, label="its slot", elem_id="other-slot")
            swap = gr.Button("Swap", elem_id="swap")
            concept = gr.Number(
                value=0, precision=0, label="concept", elem_id="concept", visible=explorer.library is not None
            )
            insert = gr.Button("Insert concept", elem_id="insert", visible=explorer.library is not None)
        with gr.Row(visible=explorer.edits and getattr(explorer.model.config, "slot_frame", "none") != "none"):
            move_y = gr.Slider(-1, 1, value=0, label="move to y", elem_id="move-y")
            move_x = gr.Slider(-1, 1, value=0, label="move to x", elem_id="move-x")
            move = gr.Button("Move slot", elem_id="move")
        with gr.Row(visible=explorer.edits):
            steps = gr.Slider(
                1, 100, value=25, step=1, label="sampling steps (LSD)", visible=explorer.model.decodes_latents
            )
            seed = gr.Number(value=0, precision=0, label="seed", visible=explorer.model.decodes_latents)
            keep_rest = gr.Checkbox(value=True, label="keep the rest of the image", elem_id="keep-rest")
        with gr.Row():
            image_file = gr.DownloadButton("Download image", elem_id="download-image", visible=explorer.edits)
            slots_file = gr.DownloadButton("Download slots (safetensors)", elem_id="download-slots")
        table = gr.Dataframe(
            headers=["slot", "confidence", "object", "position"], visible=not explorer.edits, label="predicted objects"
        )
        tiles = gr.Gallery(label="slots: mask and content", columns=8, elem_id="slots")

        def show(scene: Scene, selected_slot: int | None, steps_: float, seed_: float, keep_rest_: bool, progress=None):
            outputs: dict[Any, Any] = {
                picture: explorer.picture(scene.image),
                overlay: explorer.overlay(scene, selected_slot),
            }
            if explorer.edits:
                told = (lambda i, n: progress(i / n, desc="sampling")) if progress is not None else None
                steps_i, seed_i = int(steps_), int(seed_)
                image = (
                    explorer.decode(scene, steps_i, seed_i, keep_rest_, progress=told)
                    if scene.edited is not None
                    else explorer.reconstruction(scene, steps_i, seed_i)
                )
                outputs[decoded] = explorer.picture(image)
                outputs[image_file] = str(explorer.save_image(image))
            outputs[slots_file] = str(explorer.save_slots(scene))
            text = f"{scene.source}" + (f" ({scene.note})" if scene.note else "")
            if scene.history:
                text += ": " + "; ".join(scene.history)
            outputs[message] = text
            if not explorer.edits:
                outputs[table] = explorer.predictions(scene)
            outputs[tiles] = explorer.slot_tiles(scene)
            return outputs

        everything = [picture, overlay, decoded, image_file, slots_file, message, table, tiles]

        def guarded(fn):
            """Run a request; a fault becomes a message in the page (the server keeps serving). The wrapper keeps
            ``fn``'s signature: Gradio passes event data by its annotations."""

            @functools.wraps(fn)
            def run(*args):
                try:
                    return fn(*args)
                except SlotlabError as e:
                    return {message: f"**{e}**"}
                except Exception as e:  # any one request may fail; the page goes on
                    return {message: f"**could not do that: {type(e).__name__}: {' '.join(str(e).split())[:300]}**"}

            return run

        def do_load(i, steps_, seed_, keep_rest_):
            scene = explorer.scene(int(i))
            return {scene_state: scene, selected: -1, **show(scene, None, steps_, seed_, keep_rest_)}

        def do_upload(file, steps_, seed_, keep_rest_):
            if file is None:
                return {}
            scene = explorer.upload(file if isinstance(file, str) else file.name)
            return {scene_state: scene, selected: -1, **show(scene, None, steps_, seed_, keep_rest_)}

        def do_select(scene, evt: SelectData):
            if scene is None:
                raise DataError("show a scene first")
            k = explorer.slot_at(scene, *evt.index)
            return {selected: k, overlay: explorer.overlay(scene, k), message: f"selected slot {k}"}

        def edit(fn):
            def run(scene, k, *rest):
                steps_, seed_, keep_rest_ = rest[-3:]
                if scene is None:
                    raise DataError("show a scene first")
                new = fn(scene, k, *rest[:-3])
                return {scene_state: new, **show(new, None, steps_, seed_, keep_rest_, gr.Progress())}

            return run

        def need_slot(k):
            if k is None or int(k) < 0:
                raise DataError("select a slot first: click an object in the input image")
            return int(k)

        sampling = [steps, seed, keep_rest]
        load.click(guarded(do_load), [index, *sampling], [scene_state, selected, *everything])
        upload.upload(guarded(do_upload), [upload, *sampling], [scene_state, selected, *everything])
        picture.select(guarded(do_select), [scene_state], [selected, overlay, message])
        overlay.select(guarded(do_select), [scene_state], [selected, overlay, message])
        remove.click(
            guarded(edit(lambda s, k: explorer.remove(s, need_slot(k)))),
            [scene_state, selected, *sampling],
            [scene_state, *everything],
        )
        keep_button.click(
            guarded(
                edit(lambda s, k, text: explorer.keep(s, [int(t) for t in str(text).replace(" ", "").split(",") if t]))
            ),
            [scene_state, selected, keep, *sampling],
            [scene_state, *everything],
        )
        swap.click(
            guarded(edit(lambda s, k, i, j: explorer.swap(s, need_slot(k), explorer.scene(int(i)), int(j)))),
            [scene_state, selected, other_index, other_slot, *sampling],
            [scene_state, *everything],
        )
        insert.click(
            guarded(edit(lambda s, k, c: explorer.insert_concept(s, int(c)))),
            [scene_state, selected, concept, *sampling],
            [scene_state, *everything],
        )
        move.click(
            guarded(edit(lambda s, k, y, x: explorer.move(s, need_slot(k), y, x))),
            [scene_state, selected, move_y, move_x, *sampling],
            [scene_state, *everything],
        )
        reset.click(
            guarded(edit(lambda s, k: explorer.reset(s))),
            [scene_state, selected, *sampling],
            [scene_state, *everything],
        )
        page.load(guarded(do_load), [index, *sampling], [scene_state, selected, *everything])
    return page


def serve(
    checkpoint: str | None = None,
    library: str | None = None,
    data: str | None = None,
    port: int = 7860,
    host: str = "127.0.0.1",
    block: bool = True,
):
    """Start the page; a model that cannot be opened gives a page that says why (and how to make one)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page works offline
    try:
        explorer, error = Explorer(checkpoint, library, data), None
    except SlotlabError as e:
        explorer, error = None, str(e)
    page = build_app(explorer, error)
    page.queue()
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True, quiet=True)
    return page, explorer


__all__ = ["Explorer", "Scene", "build_app", "serve"]
