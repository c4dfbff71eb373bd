# Installs kubex-cred for the current Windows user: copies the three programs to
# %LOCALAPPDATA%\Programs\kubex-cred, puts that folder on the user's PATH, and registers a
# scheduled task that starts the daemon at logon (the same task `kubex-cred service install`
# creates). Safe to run again: it replaces the programs and the task.
#   powershell -ExecutionPolicy Bypass -File install.ps1 [-Source <folder with the .exe files>]
param([string]$Source = $PSScriptRoot)
$ErrorActionPreference = 'Stop'

$target = Join-Path $env:LOCALAPPDATA 'Programs\kubex-cred'
New-Item -ItemType Directory -Force -Path $target | Out-Null
# A running daemon holds its .exe open: stop it first (no error when none runs).
$running = Join-Path $target 'kubex-cred.exe'
if (Test-Path $running) { & $running stop 2>$null | Out-Null }
foreach ($exe in 'kubex-cred.exe', 'kubex-credd.exe', 'git-credential-kubex.exe') {
    Copy-Item -Force (Join-Path $Source $exe) $target
}

$userPath = [Environment]::GetEnvironmentVariable('Path', 'User')
if (-not (($userPath -split ';') -contains $target)) {
    [Environment]::SetEnvironmentVariable('Path', (@($userPath, $target) -ne '' -join ';'), 'User')
}

# The daemon for the whole logon session, with the user's own (limited) rights; no idle exit,
# since nothing would start it again before the next logon.
$daemon = Join-Path $target 'kubex-credd.exe'
$action = New-ScheduledTaskAction -Execute $daemon -Argument 'daemon --foreground --idle-timeout 0'
$trigger = New-ScheduledTaskTrigger -AtLogOn -User "$env:USERDOMAIN\$env:USERNAME"
$principal = New-ScheduledTaskPrincipal -UserId "$env:USERDOMAIN\$env:USERNAME" -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1)
Register-ScheduledTask -TaskName 'kubex-cred' -Action $action -Trigger $trigger -Principal $principal `
    -Settings $settings -Force | Out-Null
Start-ScheduledTask -TaskName 'kubex-cred'

Write-Output "kubex-cred installed in $target; the daemon starts at logon (task 'kubex-cred')."
Write-Output "Next: open a new terminal and run: kubex-cred login --url https://<instance>.kubex.ai --user <name>"
