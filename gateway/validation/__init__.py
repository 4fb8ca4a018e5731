"""Request validation, before any credit is spent.

    rules.py    the engine: Rule, FileRule, When, FormTable; check_fields, check_form...
    v1.py       the v1 routes' fields and tables
    v2beta.py   the v2beta Stable Image tables (generate, upscale, edit, control)

Routes never test parameters themselves: they pick a table and call the engine.
"""

from __future__ import annotations

from gateway.validation.rules import (
    MAX_EXTRA_FIELD_CHARS as MAX_EXTRA_FIELD_CHARS,
)
from gateway.validation.rules import (
    MAX_NUMBER_CHARS as MAX_NUMBER_CHARS,
)
from gateway.validation.rules import (
    MAX_PROMPT_CHARS as MAX_PROMPT_CHARS,
)
from gateway.validation.rules import (
    MAX_PROMPTS as MAX_PROMPTS,
)
from gateway.validation.rules import (
    MAX_UPLOAD_BYTES as MAX_UPLOAD_BYTES,
)
from gateway.validation.rules import (
    MAX_UPLOAD_PIXELS as MAX_UPLOAD_PIXELS,
)
from gateway.validation.rules import (
    ONE_SAMPLE as ONE_SAMPLE,
)
from gateway.validation.rules import (
    PROMPTS_SHAPE as PROMPTS_SHAPE,
)
from gateway.validation.rules import (
    UPLOAD_FORMATS as UPLOAD_FORMATS,
)
from gateway.validation.rules import (
    CheckedForm as CheckedForm,
)
from gateway.validation.rules import (
    FileRule as FileRule,
)
from gateway.validation.rules import (
    FormTable as FormTable,
)
from gateway.validation.rules import (
    OneOf as OneOf,
)
from gateway.validation.rules import (
    Rule as Rule,
)
from gateway.validation.rules import (
    When as When,
)
from gateway.validation.rules import (
    check_fields as check_fields,
)
from gateway.validation.rules import (
    check_form as check_form,
)
from gateway.validation.rules import (
    check_known_fields as check_known_fields,
)
from gateway.validation.rules import (
    check_text_prompts as check_text_prompts,
)
from gateway.validation.rules import (
    check_upload as check_upload,
)
from gateway.validation.rules import (
    check_value as check_value,
)
from gateway.validation.rules import (
    coerce_form as coerce_form,
)
from gateway.validation.rules import (
    form_text_prompts as form_text_prompts,
)
from gateway.validation.rules import (
    parse_number as parse_number,
)
from gateway.validation.v1 import (
    CLIP_GUIDANCE_PRESETS as CLIP_GUIDANCE_PRESETS,
)
from gateway.validation.v1 import (
    INIT_IMAGE_MODES as INIT_IMAGE_MODES,
)
from gateway.validation.v1 import (
    MASK_SOURCES as MASK_SOURCES,
)
from gateway.validation.v1 import (
    MAX_EXTRAS_BYTES as MAX_EXTRAS_BYTES,
)
from gateway.validation.v1 import (
    MAX_SEED as MAX_SEED,
)
from gateway.validation.v1 import (
    SAMPLERS as SAMPLERS,
)
from gateway.validation.v1 import (
    SDXL_V1_ENGINES as SDXL_V1_ENGINES,
)
from gateway.validation.v1 import (
    SDXL_V1_SIZES as SDXL_V1_SIZES,
)
from gateway.validation.v1 import (
    STYLE_PRESETS as STYLE_PRESETS,
)
from gateway.validation.v1 import (
    TEXT_TO_IMAGE_FIELDS as TEXT_TO_IMAGE_FIELDS,
)
from gateway.validation.v1 import (
    TEXT_TO_IMAGE_RULES as TEXT_TO_IMAGE_RULES,
)
from gateway.validation.v1 import (
    V1_IMAGE_TO_IMAGE as V1_IMAGE_TO_IMAGE,
)
from gateway.validation.v1 import (
    V1_IMAGE_TO_IMAGE_SDXL as V1_IMAGE_TO_IMAGE_SDXL,
)
from gateway.validation.v1 import (
    V1_MASKING as V1_MASKING,
)
from gateway.validation.v1 import (
    V1_MASKING_SDXL as V1_MASKING_SDXL,
)
from gateway.validation.v1 import (
    V1_TABLES as V1_TABLES,
)
from gateway.validation.v1 import (
    V1_UPSCALE_ESRGAN as V1_UPSCALE_ESRGAN,
)
from gateway.validation.v1 import (
    V1_UPSCALE_LATENT as V1_UPSCALE_LATENT,
)
from gateway.validation.v1 import (
    V1_UPSCALE_MAX_PIXELS as V1_UPSCALE_MAX_PIXELS,
)
from gateway.validation.v1 import (
    V1_UPSCALE_MIN_SIDE as V1_UPSCALE_MIN_SIDE,
)
from gateway.validation.v1 import (
    check_engine_dimensions as check_engine_dimensions,
)
from gateway.validation.v1 import (
    check_extras as check_extras,
)
from gateway.validation.v1 import (
    check_upscale_target as check_upscale_target,
)
from gateway.validation.v1 import (
    v1_table as v1_table,
)
from gateway.validation.v2beta import (
    LIGHT_DIRECTIONS as LIGHT_DIRECTIONS,
)
from gateway.validation.v2beta import (
    MAX_V2_PROMPT_CHARS as MAX_V2_PROMPT_CHARS,
)
from gateway.validation.v2beta import (
    MAX_V2_SEED as MAX_V2_SEED,
)
from gateway.validation.v2beta import (
    PIL_FORMATS as PIL_FORMATS,
)
from gateway.validation.v2beta import (
    SD3_MODELS as SD3_MODELS,
)
from gateway.validation.v2beta import (
    SD3_MODES as SD3_MODES,
)
from gateway.validation.v2beta import (
    SD3_OUTPUT_FORMATS as SD3_OUTPUT_FORMATS,
)
from gateway.validation.v2beta import (
    V2_ASPECT_SIZES as V2_ASPECT_SIZES,
)
from gateway.validation.v2beta import (
    V2_CONTROL_SKETCH as V2_CONTROL_SKETCH,
)
from gateway.validation.v2beta import (
    V2_CONTROL_STRUCTURE as V2_CONTROL_STRUCTURE,
)
from gateway.validation.v2beta import (
    V2_CONTROL_STYLE as V2_CONTROL_STYLE,
)
from gateway.validation.v2beta import (
    V2_CONTROL_STYLE_TRANSFER as V2_CONTROL_STYLE_TRANSFER,
)
from gateway.validation.v2beta import (
    V2_CORE as V2_CORE,
)
from gateway.validation.v2beta import (
    V2_EDIT_ERASE as V2_EDIT_ERASE,
)
from gateway.validation.v2beta import (
    V2_EDIT_INPAINT as V2_EDIT_INPAINT,
)
from gateway.validation.v2beta import (
    V2_EDIT_OUTPAINT as V2_EDIT_OUTPAINT,
)
from gateway.validation.v2beta import (
    V2_EDIT_REMOVE_BACKGROUND as V2_EDIT_REMOVE_BACKGROUND,
)
from gateway.validation.v2beta import (
    V2_EDIT_REPLACE_BACKGROUND_AND_RELIGHT as V2_EDIT_REPLACE_BACKGROUND_AND_RELIGHT,
)
from gateway.validation.v2beta import (
    V2_EDIT_SEARCH_AND_RECOLOR as V2_EDIT_SEARCH_AND_RECOLOR,
)
from gateway.validation.v2beta import (
    V2_EDIT_SEARCH_AND_REPLACE as V2_EDIT_SEARCH_AND_REPLACE,
)
from gateway.validation.v2beta import (
    V2_OUTPUT_FORMATS as V2_OUTPUT_FORMATS,
)
from gateway.validation.v2beta import (
    V2_SD3 as V2_SD3,
)
from gateway.validation.v2beta import (
    V2_ULTRA as V2_ULTRA,
)
from gateway.validation.v2beta import (
    V2_UPSCALE_CONSERVATIVE as V2_UPSCALE_CONSERVATIVE,
)
from gateway.validation.v2beta import (
    V2_UPSCALE_CREATIVE as V2_UPSCALE_CREATIVE,
)
from gateway.validation.v2beta import (
    V2_UPSCALE_FAST as V2_UPSCALE_FAST,
)
